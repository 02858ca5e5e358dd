package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;

import java.util.LinkedHashMap;
import java.util.Map;

/** Conformance sample for the Java runtime interface client: one handler, three outcomes. */
public class App implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        Object mode = event.get("mode");
        if ("error".equals(mode)) {
            throw new ConformanceError("handled: " + event.get("value"));
        }
        if ("exit".equals(mode)) {
            System.out.println("exiting mid-invocation");
            System.out.flush();
            System.exit(7);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("ric", "java");
        out.put("echo", event.get("value"));
        out.put("requestId", context.getAwsRequestId());
        out.put("functionName", context.getFunctionName());
        out.put("functionVersion", context.getFunctionVersion());
        out.put("memoryLimitInMB", context.getMemoryLimitInMB());
        out.put("invokedFunctionArn", context.getInvokedFunctionArn());
        out.put("remainingMs", context.getRemainingTimeInMillis());
        return out;
    }
}
