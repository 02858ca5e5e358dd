package com.amazonaws.services.lambda.runtime;

/** The calling application, from the client context's "client" object. */
public interface Client {
    String getInstallationId();

    String getAppTitle();

    String getAppVersionName();

    String getAppVersionCode();

    String getAppPackageName();
}
