package com.amazonaws.services.lambda.runtime;

/** The invocation, function and execution environment, as AWS Lambda's Java runtime describes them. */
public interface Context {
    String getAwsRequestId();

    String getLogGroupName();

    String getLogStreamName();

    String getFunctionName();

    String getFunctionVersion();

    String getInvokedFunctionArn();

    /** Always null here: there is no Cognito. */
    CognitoIdentity getIdentity();

    /** The caller's client context, or null when the invocation carried none. */
    ClientContext getClientContext();

    int getRemainingTimeInMillis();

    int getMemoryLimitInMB();

    LambdaLogger getLogger();

    default String getXrayTraceId() {
        return null;
    }

    default String getTenantId() {
        return null;
    }
}
