package com.amazonaws.services.lambda.runtime;

import java.nio.charset.StandardCharsets;

/** The logger outside a handler (static initialisers, background threads). */
public final class LambdaRuntime {
    private static final LambdaLogger LOGGER = new LambdaLogger() {
        @Override
        public void log(String message) {
            String text = message == null ? "null" : message;
            System.out.print(text.endsWith("\n") ? text : text + "\n");
        }

        @Override
        public void log(byte[] message) {
            log(new String(message, StandardCharsets.UTF_8));
        }
    };

    private LambdaRuntime() {
    }

    public static LambdaLogger getLogger() {
        return LOGGER;
    }
}
