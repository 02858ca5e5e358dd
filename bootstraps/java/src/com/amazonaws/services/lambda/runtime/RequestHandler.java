package com.amazonaws.services.lambda.runtime;

/**
 * A handler that takes the event converted from JSON to {@code I} and returns
 * a result the runtime serializes to JSON; same shape as AWS's
 * aws-lambda-java-core, so code written against it compiles unchanged.
 */
public interface RequestHandler<I, O> {
    O handleRequest(I input, Context context);
}
