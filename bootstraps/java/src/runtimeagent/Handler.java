package runtimeagent;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Type;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * One function's handler: {@code package.Class::method}, or
 * {@code package.Class} implementing {@link RequestHandler} or
 * {@link RequestStreamHandler}.
 *
 * <p>A method may take, as AWS's Java runtime accepts: {@code ()},
 * {@code (event)}, {@code (event, Context)}, {@code (Context)}, or any of
 * {@code (InputStream[, OutputStream][, Context])}, where the event is the
 * payload converted to the parameter's type ({@link Convert}) and the
 * streams carry the raw payload and response. Among overloads the longest
 * signature wins, then one ending in Context. Classes come from
 * {@code /var/task} and {@code /var/task/lib/*.jar}.
 */
final class Handler {
    /** What each parameter of a handler method receives. */
    private enum Slot { EVENT, INPUT, OUTPUT, CONTEXT }

    /** An init failure with AWS's error type and message. */
    static final class InitError extends Exception {
        private static final long serialVersionUID = 1L;
        final String errorType;

        InitError(String errorType, String message, Throwable cause) {
            super(message, cause);
            this.errorType = errorType;
        }
    }

    /** Longest signature first, then one ending in Context (AWS's order). No lambdas: each costs a cold start. */
    private static final Comparator<Method> PRIORITY = new Comparator<Method>() {
        @Override
        public int compare(Method a, Method b) {
            if (a.getParameterCount() != b.getParameterCount()) {
                return b.getParameterCount() - a.getParameterCount();
            }
            return Boolean.compare(!endsInContext(a), !endsInContext(b));
        }
    };

    private static boolean endsInContext(Method m) {
        int n = m.getParameterCount();
        return n > 0 && m.getParameterTypes()[n - 1] == Context.class;
    }

    private final Method method;
    private final Object instance;   // null for a static method
    private final Slot[] slots;
    private final Type eventType;

    private Handler(Method method, Object instance, Slot[] slots) {
        this.method = method;
        this.instance = instance;
        this.slots = slots;
        int event = Arrays.asList(slots).indexOf(Slot.EVENT);
        this.eventType = event < 0 ? null : method.getGenericParameterTypes()[event];
    }

    /** The class loader for the function's code: its classes, then its jars. */
    static ClassLoader codeLoader(String taskRoot) throws MalformedURLException {
        List<URL> urls = new ArrayList<>();
        urls.add(new File(taskRoot).toURI().toURL());
        String[] names = new File(taskRoot, "lib").list();
        if (names != null) {
            Arrays.sort(names);
            for (String name : names) {
                if (name.endsWith(".jar")) {
                    urls.add(new File(new File(taskRoot, "lib"), name).toURI().toURL());
                }
            }
        }
        return new URLClassLoader(urls.toArray(new URL[0]), ClassLoader.getSystemClassLoader());
    }

    static Handler load(String spec, ClassLoader loader) throws InitError {
        int sep = spec.indexOf("::");
        String className = sep < 0 ? spec : spec.substring(0, sep);
        String methodName = sep < 0 ? null : spec.substring(sep + 2);
        Class<?> c;
        try {
            c = Class.forName(className, true, loader);
        } catch (ClassNotFoundException e) {
            throw new InitError(e.getClass().getName(), "Class not found: " + className, e);
        } catch (ExceptionInInitializerError e) {
            Throwable t = e.getCause() != null ? e.getCause() : e;
            throw new InitError(t.getClass().getName(), "Error loading class " + className
                    + (t.getMessage() == null ? "" : ": " + t.getMessage()), t);
        } catch (LinkageError e) { // a class it needs is missing, or was compiled for a newer Java
            throw new InitError(e.getClass().getName(), "Error loading class " + className
                    + (e.getMessage() == null ? "" : ": " + e.getMessage()), e);
        }
        if (methodName == null) {
            if (!RequestHandler.class.isAssignableFrom(c) && !RequestStreamHandler.class.isAssignableFrom(c)) {
                throw new InitError("Runtime.HandlerNotFound", "Class " + className + " does not implement "
                        + "RequestHandler or RequestStreamHandler: name a method as " + className + "::method", null);
            }
            methodName = "handleRequest";
        }
        Method chosen = null;
        Slot[] slots = null;
        List<Method> candidates = new ArrayList<>();
        for (Method m : c.getMethods()) {
            if (m.getName().equals(methodName) && !m.isBridge() && !m.isSynthetic()) {
                candidates.add(m);
            }
        }
        candidates.sort(PRIORITY);
        for (Method m : candidates) {
            slots = slots(m.getParameterTypes());
            if (slots != null) {
                chosen = m;
                break;
            }
        }
        if (chosen == null) {
            throw new InitError("Runtime.HandlerNotFound", "No public method named " + methodName
                    + " with appropriate method signature found on class " + className, null);
        }
        Object instance = null;
        if (!Modifier.isStatic(chosen.getModifiers())) {
            try {
                instance = Convert.newInstance(c);
            } catch (NoSuchMethodException e) {
                throw new InitError("Runtime.HandlerNotFound", "Class " + className + " needs a constructor "
                        + "without arguments, or " + methodName + " must be static", e);
            } catch (Throwable t) { // the constructor threw
                throw new InitError(t.getClass().getName(), "Error loading class " + className
                        + (t.getMessage() == null ? "" : ": " + t.getMessage()), t);
            }
        }
        chosen.trySetAccessible(); // a public method of a class that is not public
        return new Handler(chosen, instance, slots);
    }

    /** The parameters' roles, or null when the signature is not one a handler may have. */
    private static Slot[] slots(Class<?>[] types) {
        if (types.length > 3) {
            return null;
        }
        Slot[] slots = new Slot[types.length];
        for (int i = 0; i < types.length; i++) {
            Class<?> t = types[i];
            slots[i] = t == Context.class ? Slot.CONTEXT : t == InputStream.class ? Slot.INPUT
                    : t == OutputStream.class ? Slot.OUTPUT : Slot.EVENT;
            // Roles appear in the order INPUT/EVENT, OUTPUT, CONTEXT, each at most once.
            if (i > 0 && slots[i].ordinal() <= slots[i - 1].ordinal()) {
                return null;
            }
        }
        List<Slot> list = Arrays.asList(slots);
        if (list.contains(Slot.EVENT) && (list.contains(Slot.INPUT) || list.contains(Slot.OUTPUT))) {
            return null;
        }
        return slots;
    }

    /** Whether the handler writes its response itself (it takes an OutputStream). */
    boolean streams() {
        return Arrays.asList(slots).contains(Slot.OUTPUT);
    }

    /**
     * Runs the handler once. Returns the response as JSON bytes (or the bytes a
     * stream handler wrote); throws whatever the handler threw, unwrapped.
     */
    byte[] invoke(byte[] payload, Context context) throws Throwable {
        Object[] args = new Object[slots.length];
        ByteArrayOutputStream output = null;
        for (int i = 0; i < slots.length; i++) {
            switch (slots[i]) {
                case EVENT:
                    args[i] = event(payload);
                    break;
                case INPUT:
                    args[i] = new ByteArrayInputStream(payload);
                    break;
                case OUTPUT:
                    args[i] = output = new ByteArrayOutputStream();
                    break;
                default:
                    args[i] = context;
            }
        }
        Object result;
        try {
            result = method.invoke(instance, args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
        if (output != null) {
            return output.toByteArray();
        }
        Object json;
        try {
            json = Convert.toJson(result);
        } catch (StackOverflowError e) {
            throw new Convert.MarshalException("nested too deeply");
        }
        return Json.write(json).getBytes(StandardCharsets.UTF_8);
    }

    private Object event(byte[] payload) {
        String text = new String(payload, StandardCharsets.UTF_8);
        try {
            Object json = text.isBlank() ? new java.util.LinkedHashMap<String, Object>() : Json.parse(text);
            return Convert.toJava(json, eventType);
        } catch (IllegalArgumentException | ReflectiveOperationException e) {
            String where = String.valueOf(e.getMessage()); // ".items[0].quantity: cannot convert ..."
            throw new RuntimeException("An error occurred during JSON parsing: "
                    + (where.startsWith(".") ? where.substring(1) : where), e);
        }
    }
}
