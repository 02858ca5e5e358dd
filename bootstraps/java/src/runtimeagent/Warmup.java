package runtimeagent;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.io.File;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.List;
import java.util.Map;

/**
 * The handler the agent runs once per Java runtime when it starts, with
 * {@code -XX:ArchiveClassesAtExit}, so that the classes a cold start loads
 * (the bootstrap's, and the JDK's it uses: channels, reflection, JSON
 * conversion, error documents) land in the runtime's class-data-sharing
 * archive. Not for functions.
 */
public final class Warmup implements RequestHandler<Map<String, Object>, Object> {
    /** A bean, converted both ways as a function's POJO would be. */
    public static final class Bean {
        private String name;
        public int count;
        public String note;
        private List<String> tags;

        public String getName() {
            return name;
        }

        public void setName(String name) {
            this.name = name;
        }

        public List<String> getTags() {
            return tags;
        }

        public void setTags(List<String> tags) {
            this.tags = tags;
        }
    }

    @Override
    public Object handleRequest(Map<String, Object> event, Context context) {
        context.getLogger().log("warm-up " + context.getAwsRequestId() + " " + context.getRemainingTimeInMillis());
        if (Boolean.TRUE.equals(event.get("fail"))) {
            throw new IllegalStateException("warm-up failure", new IllegalArgumentException("cause"));
        }
        try {
            // A class file from the task directory, as a function's classes are loaded (the agent puts
            // a copy of Bean's there; with no parent loader, the jar's copy does not shadow it).
            File root = new File(System.getenv().getOrDefault("LAMBDA_TASK_ROOT", "/var/task"));
            try (URLClassLoader loader = new URLClassLoader(new URL[] {root.toURI().toURL()}, null)) {
                Convert.newInstance(loader.loadClass(Bean.class.getName()));
            } catch (ClassNotFoundException | java.io.IOException e) {
                context.getLogger().log("warm-up: no class file in " + root);
            }
            Bean bean = (Bean) Convert.toJava(event.get("bean"), Bean.class);
            return Map.of("bean", bean, "list", List.of(1, 2.5, "x", true), "context", context.getFunctionName());
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }
}
