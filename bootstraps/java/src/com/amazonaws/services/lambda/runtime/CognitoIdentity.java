package com.amazonaws.services.lambda.runtime;

/** Kept for source compatibility; {@link Context#getIdentity()} is always null here. */
public interface CognitoIdentity {
    String getIdentityId();

    String getIdentityPoolId();
}
