package runtimeagent;

import com.amazonaws.services.lambda.runtime.Client;
import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.LambdaRuntime;
import java.util.LinkedHashMap;
import java.util.Map;

/** The handler's {@link Context}: one per invocation, shaped like AWS Lambda's. */
final class LambdaContext implements Context {
    /** What stays the same for every invocation of this environment. */
    static final class Function {
        final String name;
        final String version;
        final int memoryMb;
        final String logGroup;
        final String logStream;

        Function(Map<String, String> env) {
            name = env.getOrDefault("AWS_LAMBDA_FUNCTION_NAME", "");
            version = env.getOrDefault("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
            int mb;
            try {
                mb = Integer.parseInt(env.getOrDefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"));
            } catch (NumberFormatException e) {
                mb = 128;
            }
            memoryMb = mb;
            logGroup = env.getOrDefault("AWS_LAMBDA_LOG_GROUP_NAME", "");
            logStream = env.getOrDefault("AWS_LAMBDA_LOG_STREAM_NAME", "");
        }
    }

    private final Function function;
    private final String requestId;
    private final long deadlineMs;
    private final String arn;
    private final ClientContext clientContext;

    LambdaContext(Function function, String requestId, long deadlineMs, String arn, String clientContextJson) {
        this.function = function;
        this.requestId = requestId;
        this.deadlineMs = deadlineMs;
        this.arn = arn;
        this.clientContext = clientContextJson.isEmpty() ? null : new Caller(Json.parse(clientContextJson));
    }

    @Override
    public String getAwsRequestId() {
        return requestId;
    }

    @Override
    public String getLogGroupName() {
        return function.logGroup;
    }

    @Override
    public String getLogStreamName() {
        return function.logStream;
    }

    @Override
    public String getFunctionName() {
        return function.name;
    }

    @Override
    public String getFunctionVersion() {
        return function.version;
    }

    @Override
    public String getInvokedFunctionArn() {
        return arn;
    }

    @Override
    public CognitoIdentity getIdentity() {
        return null;
    }

    @Override
    public ClientContext getClientContext() {
        return clientContext;
    }

    @Override
    public int getRemainingTimeInMillis() {
        return (int) Math.max(0, Math.min(Integer.MAX_VALUE, deadlineMs - System.currentTimeMillis()));
    }

    @Override
    public int getMemoryLimitInMB() {
        return function.memoryMb;
    }

    @Override
    public LambdaLogger getLogger() {
        return LambdaRuntime.getLogger();
    }

    /** The client context's three parts, with AWS's field names ("installation_id", ...). */
    private static final class Caller implements ClientContext, Client {
        private final Map<String, String> client;
        private final Map<String, String> custom;
        private final Map<String, String> env;

        Caller(Object json) {
            Map<?, ?> doc = json instanceof Map ? (Map<?, ?>) json : Map.of();
            client = strings(doc.get("client"));
            custom = strings(doc.get("custom"));
            env = strings(doc.get("env"));
        }

        private static Map<String, String> strings(Object json) {
            Map<String, String> out = new LinkedHashMap<>();
            if (json instanceof Map) {
                for (Map.Entry<?, ?> e : ((Map<?, ?>) json).entrySet()) {
                    Object v = e.getValue();
                    out.put(String.valueOf(e.getKey()), v == null || v instanceof String ? (String) v : Json.write(v));
                }
            }
            return out;
        }

        @Override
        public Client getClient() {
            return this;
        }

        @Override
        public Map<String, String> getCustom() {
            return custom;
        }

        @Override
        public Map<String, String> getEnvironment() {
            return env;
        }

        @Override
        public String getInstallationId() {
            return client.get("installation_id");
        }

        @Override
        public String getAppTitle() {
            return client.get("app_title");
        }

        @Override
        public String getAppVersionName() {
            return client.get("app_version_name");
        }

        @Override
        public String getAppVersionCode() {
            return client.get("app_version_code");
        }

        @Override
        public String getAppPackageName() {
            return client.get("app_package_name");
        }
    }
}
