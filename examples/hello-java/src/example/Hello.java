package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

/** The smallest useful Java function: greets whoever the event names. */
public class Hello implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    private static int invocations; // static state survives between warm invocations

    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        invocations++;
        Object name = event.getOrDefault("name", "world");
        System.out.println("greeting " + name + " (invocation " + invocations + " of this environment)");
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("message", System.getenv().getOrDefault("GREETING", "Hello") + ", " + name + "!");
        out.put("request_id", context.getAwsRequestId());
        out.put("invocations_in_this_environment", invocations);
        out.put("remaining_ms", context.getRemainingTimeInMillis());
        return out;
    }
}
