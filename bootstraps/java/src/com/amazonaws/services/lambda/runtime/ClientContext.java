package com.amazonaws.services.lambda.runtime;

import java.util.Map;

/** The client context an invocation carried ({"client": {...}, "custom": {...}, "env": {...}}). */
public interface ClientContext {
    Client getClient();

    Map<String, String> getCustom();

    Map<String, String> getEnvironment();
}
