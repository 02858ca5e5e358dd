package runtimeagent;

import java.lang.reflect.Array;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.lang.reflect.WildcardType;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Date;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.SortedMap;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * Plain JSON values ({@link Json}) to a handler's parameter type, and a
 * handler's result back to plain values, the way AWS's Java runtime (Jackson)
 * does for ordinary code: String, numbers, booleans, enums, Map, List, Set,
 * arrays, records, and POJOs through a no-argument constructor and setters or
 * fields; results through getters and public fields. Scalars are coerced
 * ("42" fills an int), unknown properties are ignored.
 */
final class Convert {
    private Convert() {
    }

    // -- JSON to Java ----------------------------------------------------------
    static Object toJava(Object json, Type type) throws ReflectiveOperationException {
        if (type instanceof Class) {
            return toClass(json, (Class<?>) type, null);
        }
        if (type instanceof ParameterizedType) {
            ParameterizedType p = (ParameterizedType) type;
            return toClass(json, (Class<?>) p.getRawType(), p.getActualTypeArguments());
        }
        if (type instanceof GenericArrayType) {
            return toArray(json, ((GenericArrayType) type).getGenericComponentType());
        }
        if (type instanceof WildcardType) {
            return toJava(json, ((WildcardType) type).getUpperBounds()[0]);
        }
        if (type instanceof TypeVariable) {
            return toJava(json, ((TypeVariable<?>) type).getBounds()[0]);
        }
        return json;
    }

    private static Object toClass(Object json, Class<?> c, Type[] args) throws ReflectiveOperationException {
        if (c == Object.class) {
            return json;
        }
        if (c == String.class || c == CharSequence.class) {
            // A String parameter takes a JSON string as is and anything else as its JSON text.
            return json == null || json instanceof String ? json : Json.write(json);
        }
        if (c.isPrimitive() || Number.class.isAssignableFrom(c) || c == Boolean.class || c == Character.class) {
            return scalar(json, c);
        }
        if (json == null) {
            return c == Optional.class ? Optional.empty() : null;
        }
        if (c.isEnum()) {
            return enumValue(c, json);
        }
        if (c == Optional.class) {
            return Optional.ofNullable(toJava(json, arg(args, 0)));
        }
        if (Map.class.isAssignableFrom(c)) {
            return toMap(json, c, arg(args, 0), arg(args, 1));
        }
        if (Collection.class.isAssignableFrom(c) || c == Iterable.class) {
            return toCollection(json, c, arg(args, 0));
        }
        if (c.isArray()) {
            if (c == byte[].class && json instanceof String) {
                return Base64.getDecoder().decode((String) json);
            }
            return toArray(json, c.getComponentType());
        }
        if (c.isRecord()) {
            return toRecord(json, c);
        }
        return toBean(json, c);
    }

    private static Type arg(Type[] args, int i) {
        return args != null && i < args.length ? args[i] : Object.class;
    }

    private static IllegalArgumentException mismatch(Object json, Type type) {
        String what = json == null ? "null" : json instanceof Map ? "a JSON object" : json instanceof List
                ? "a JSON array" : json instanceof String ? "the JSON string " + Json.write(shorten((String) json))
                : "the JSON value " + json;
        return new IllegalArgumentException("cannot convert " + what + " to " + type.getTypeName());
    }

    private static String shorten(String s) {
        return s.length() <= 40 ? s : s.substring(0, 40) + "...";
    }

    /** Converts one property or element, naming where a mismatch was: "items[0].quantity: ...". */
    private static Object at(String where, Object json, Type type) throws ReflectiveOperationException {
        try {
            return toJava(json, type);
        } catch (IllegalArgumentException e) {
            String msg = e.getMessage();
            String sep = msg.startsWith("[") || msg.startsWith(".") ? "" : ": ";
            throw new IllegalArgumentException(where + sep + msg, e.getCause());
        }
    }

    private static Object scalar(Object json, Class<?> c) {
        if (json == null) {
            if (!c.isPrimitive()) {
                return null;
            }
            json = c == boolean.class ? Boolean.FALSE : c == char.class ? "\0" : (Object) 0;
        }
        if (c == boolean.class || c == Boolean.class) {
            if (json instanceof Boolean) {
                return json;
            }
            if ("true".equals(json) || "false".equals(json)) {
                return Boolean.valueOf((String) json);
            }
            throw mismatch(json, c);
        }
        if (c == char.class || c == Character.class) {
            if (json instanceof String && ((String) json).length() == 1) {
                return ((String) json).charAt(0);
            }
            throw mismatch(json, c);
        }
        BigDecimal n;
        try {
            n = json instanceof Number ? new BigDecimal(json.toString())
                    : json instanceof String ? new BigDecimal(((String) json).trim()) : null;
        } catch (NumberFormatException e) {
            n = null;
        }
        if (n == null) {
            throw mismatch(json, c);
        }
        if (c == double.class || c == Double.class) {
            return n.doubleValue();
        }
        if (c == float.class || c == Float.class) {
            return n.floatValue();
        }
        if (c == BigDecimal.class || c == Number.class) {
            return n;
        }
        try {
            if (c == BigInteger.class) {
                return n.toBigIntegerExact();
            }
            if (c == long.class || c == Long.class) {
                return n.longValueExact();
            }
            if (c == int.class || c == Integer.class) {
                return n.intValueExact();
            }
            if (c == short.class || c == Short.class) {
                return n.shortValueExact();
            }
            if (c == byte.class || c == Byte.class) {
                return n.byteValueExact();
            }
        } catch (ArithmeticException e) {
            throw new IllegalArgumentException("the JSON number " + json + " does not fit " + c.getName());
        }
        throw mismatch(json, c);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Object enumValue(Class<?> c, Object json) {
        if (!(json instanceof String)) {
            throw mismatch(json, c);
        }
        return Enum.valueOf((Class<Enum>) c, (String) json);
    }

    @SuppressWarnings("unchecked")
    private static Object toMap(Object json, Class<?> c, Type keyType, Type valueType)
            throws ReflectiveOperationException {
        if (!(json instanceof Map)) {
            throw mismatch(json, c);
        }
        Map<Object, Object> map;
        if (c.isInterface() || Modifier.isAbstract(c.getModifiers())) {
            map = SortedMap.class.isAssignableFrom(c) ? new TreeMap<>() : new LinkedHashMap<>();
        } else {
            map = (Map<Object, Object>) newInstance(c);
        }
        boolean plain = keyType == Object.class && valueType == Object.class;
        for (Map.Entry<String, Object> e : ((Map<String, Object>) json).entrySet()) {
            Object key = plain || keyType == String.class ? e.getKey() : toJava(e.getKey(), keyType);
            map.put(key, plain ? e.getValue() : at("." + e.getKey(), e.getValue(), valueType));
        }
        return map;
    }

    @SuppressWarnings("unchecked")
    private static Object toCollection(Object json, Class<?> c, Type itemType) throws ReflectiveOperationException {
        if (!(json instanceof List)) {
            throw mismatch(json, c);
        }
        Collection<Object> out;
        if (c.isInterface() || Modifier.isAbstract(c.getModifiers())) {
            out = SortedSet.class.isAssignableFrom(c) ? new TreeSet<>()
                    : Set.class.isAssignableFrom(c) ? new LinkedHashSet<>() : new ArrayList<>();
        } else {
            out = (Collection<Object>) newInstance(c);
        }
        int i = 0;
        for (Object item : (List<?>) json) {
            out.add(at("[" + i++ + "]", item, itemType));
        }
        return out;
    }

    private static Object toArray(Object json, Type itemType) throws ReflectiveOperationException {
        Class<?> raw = rawClass(itemType);
        if (!(json instanceof List)) {
            throw mismatch(json, Array.newInstance(raw, 0).getClass());
        }
        List<?> list = (List<?>) json;
        Object array = Array.newInstance(raw, list.size());
        for (int i = 0; i < list.size(); i++) {
            Array.set(array, i, at("[" + i + "]", list.get(i), itemType));
        }
        return array;
    }

    private static Class<?> rawClass(Type t) {
        if (t instanceof Class) {
            return (Class<?>) t;
        }
        if (t instanceof ParameterizedType) {
            return (Class<?>) ((ParameterizedType) t).getRawType();
        }
        if (t instanceof GenericArrayType) {
            return Array.newInstance(rawClass(((GenericArrayType) t).getGenericComponentType()), 0).getClass();
        }
        return Object.class;
    }

    private static Object toRecord(Object json, Class<?> c) throws ReflectiveOperationException {
        if (!(json instanceof Map)) {
            throw mismatch(json, c);
        }
        RecordComponent[] parts = c.getRecordComponents();
        Class<?>[] types = new Class<?>[parts.length];
        Object[] values = new Object[parts.length];
        for (int i = 0; i < parts.length; i++) {
            types[i] = parts[i].getType();
            values[i] = at("." + parts[i].getName(), ((Map<?, ?>) json).get(parts[i].getName()),
                    parts[i].getGenericType());
        }
        Constructor<?> ctor = c.getDeclaredConstructor(types);
        ctor.trySetAccessible();
        return construct(ctor, values);
    }

    private static Object toBean(Object json, Class<?> c) throws ReflectiveOperationException {
        if (!(json instanceof Map)) {
            throw mismatch(json, c);
        }
        Object bean = newInstance(c);
        for (Map.Entry<?, ?> e : ((Map<?, ?>) json).entrySet()) {
            String name = (String) e.getKey();
            Method setter = setter(c, name);
            if (setter != null) {
                invoke(setter, bean, at("." + name, e.getValue(), setter.getGenericParameterTypes()[0]));
                continue;
            }
            Field field = field(c, name);
            if (field != null) {
                field.set(bean, at("." + name, e.getValue(), field.getGenericType()));
            }
        }
        return bean;
    }

    private static Method setter(Class<?> c, String property) {
        if (property.isEmpty()) {
            return null;
        }
        String name = "set" + Character.toUpperCase(property.charAt(0)) + property.substring(1);
        for (Method m : c.getMethods()) {
            if (m.getName().equals(name) && m.getParameterCount() == 1 && !Modifier.isStatic(m.getModifiers())) {
                m.trySetAccessible(); // a public method of a class that is not public
                return m;
            }
        }
        return null;
    }

    private static Field field(Class<?> c, String name) {
        for (Class<?> k = c; k != null && k != Object.class; k = k.getSuperclass()) {
            try {
                Field f = k.getDeclaredField(name);
                int mod = f.getModifiers();
                if (!Modifier.isStatic(mod) && !Modifier.isFinal(mod) && f.trySetAccessible()) {
                    return f;
                }
                return null;
            } catch (NoSuchFieldException e) {
                // look in the superclass
            }
        }
        return null;
    }

    static Object newInstance(Class<?> c) throws ReflectiveOperationException {
        Constructor<?> ctor;
        try {
            ctor = c.getDeclaredConstructor();
        } catch (NoSuchMethodException e) {
            throw new NoSuchMethodException(c.getName() + " has no constructor without arguments");
        }
        ctor.trySetAccessible();
        return construct(ctor);
    }

    /** Runs user code (a constructor), letting what it throws through as itself. */
    private static Object construct(Constructor<?> ctor, Object... args) throws ReflectiveOperationException {
        try {
            return ctor.newInstance(args);
        } catch (java.lang.reflect.InvocationTargetException e) {
            throw Bootstrap.<RuntimeException>rethrow(e.getCause());
        }
    }

    private static Object invoke(Method m, Object target, Object... args) throws ReflectiveOperationException {
        try {
            return m.invoke(target, args);
        } catch (java.lang.reflect.InvocationTargetException e) {
            throw Bootstrap.<RuntimeException>rethrow(e.getCause());
        }
    }

    // -- Java to JSON ----------------------------------------------------------
    /** Why a result cannot be sent back (a cycle, a getter that threw). */
    static final class MarshalException extends Exception {
        private static final long serialVersionUID = 1L;

        MarshalException(String message) {
            super(message);
        }
    }

    static Object toJson(Object value) throws MarshalException {
        return toJson(value, new IdentityHashMap<>(), 0);
    }

    private static Object toJson(Object v, IdentityHashMap<Object, Boolean> open, int depth) throws MarshalException {
        if (v == null || v instanceof String || v instanceof Boolean || v instanceof Integer || v instanceof Long
                || v instanceof Double) {
            return v;
        }
        if (v instanceof Number) {
            return v instanceof Float || v instanceof BigDecimal || v instanceof BigInteger || v instanceof Short
                    || v instanceof Byte ? v : (Object) new BigDecimal(v.toString());
        }
        if (v instanceof Character || v instanceof CharSequence) {
            return v.toString();
        }
        if (v instanceof Enum) {
            return ((Enum<?>) v).name();
        }
        if (v instanceof Date) {
            return ((Date) v).getTime(); // epoch milliseconds, as Jackson writes it
        }
        if (v instanceof byte[]) {
            return Base64.getEncoder().encodeToString((byte[]) v);
        }
        if (v instanceof Optional) {
            return toJson(((Optional<?>) v).orElse(null), open, depth);
        }
        if (depth >= Json.MAX_DEPTH) {
            throw new MarshalException("nested deeper than " + Json.MAX_DEPTH + " levels");
        }
        if (open.put(v, Boolean.TRUE) != null) {
            throw new MarshalException("cycle: a " + v.getClass().getName() + " contains itself");
        }
        try {
            if (v instanceof Map) {
                Map<String, Object> out = new LinkedHashMap<>();
                for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                    out.put(String.valueOf(e.getKey()), toJson(e.getValue(), open, depth + 1));
                }
                return out;
            }
            if (v instanceof Iterable) {
                List<Object> out = new ArrayList<>();
                for (Object item : (Iterable<?>) v) {
                    out.add(toJson(item, open, depth + 1));
                }
                return out;
            }
            if (v.getClass().isArray()) {
                List<Object> out = new ArrayList<>();
                for (int i = 0, n = Array.getLength(v); i < n; i++) {
                    out.add(toJson(Array.get(v, i), open, depth + 1));
                }
                return out;
            }
            String pkg = v.getClass().getPackageName();
            if (pkg.startsWith("java.") || pkg.startsWith("javax.") || pkg.startsWith("jdk.")) {
                return v.toString(); // UUID, URI, java.time.*: their text form
            }
            return properties(v, open, depth);
        } finally {
            open.remove(v);
        }
    }

    /** A record's components, or a bean's getters and public fields, in declaration order where known. */
    private static Map<String, Object> properties(Object v, IdentityHashMap<Object, Boolean> open, int depth)
            throws MarshalException {
        Class<?> c = v.getClass();
        Map<String, Method> getters = new TreeMap<>();
        if (c.isRecord()) {
            for (RecordComponent rc : c.getRecordComponents()) {
                getters.put(rc.getName(), rc.getAccessor());
            }
        } else {
            for (Method m : c.getMethods()) {
                String property = propertyOf(m);
                if (property != null) {
                    getters.putIfAbsent(property, m);
                }
            }
        }
        Map<String, Object> sources = new LinkedHashMap<>();
        List<Class<?>> chain = new ArrayList<>();
        for (Class<?> k = c; k != null && k != Object.class; k = k.getSuperclass()) {
            chain.add(0, k);
        }
        for (Class<?> k : chain) {
            for (Field f : k.getDeclaredFields()) {
                int mod = f.getModifiers();
                if (Modifier.isStatic(mod) || f.isSynthetic()) {
                    continue;
                }
                Method g = getters.remove(f.getName());
                if (g != null) {
                    sources.put(f.getName(), g);
                } else if (Modifier.isPublic(mod)) {
                    sources.put(f.getName(), f);
                }
            }
        }
        sources.putAll(getters); // getters without a field of their name, by name
        Map<String, Object> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : sources.entrySet()) {
            Object value;
            try {
                if (e.getValue() instanceof Method) {
                    Method m = (Method) e.getValue();
                    m.trySetAccessible();
                    value = m.invoke(v);
                } else {
                    Field f = (Field) e.getValue();
                    f.trySetAccessible();
                    value = f.get(v);
                }
            } catch (ReflectiveOperationException | RuntimeException ex) {
                Throwable cause = ex instanceof java.lang.reflect.InvocationTargetException ? ex.getCause() : ex;
                throw new MarshalException("property '" + e.getKey() + "' of " + c.getName() + ": " + cause);
            }
            out.put(e.getKey(), toJson(value, open, depth + 1));
        }
        return out;
    }

    /** "name" for a public getName()/isName() (boolean) instance getter, else null. */
    private static String propertyOf(Method m) {
        if (m.getParameterCount() != 0 || Modifier.isStatic(m.getModifiers()) || m.getDeclaringClass() == Object.class
                || m.getReturnType() == void.class) {
            return null;
        }
        String n = m.getName();
        int skip = n.startsWith("get") ? 3
                : n.startsWith("is") && (m.getReturnType() == boolean.class || m.getReturnType() == Boolean.class)
                ? 2 : 0;
        if (skip == 0 || n.length() == skip) {
            return null;
        }
        String rest = n.substring(skip);
        // JavaBeans: "getURL" is "URL", "getName" is "name".
        if (rest.length() > 1 && Character.isUpperCase(rest.charAt(0)) && Character.isUpperCase(rest.charAt(1))) {
            return rest;
        }
        return Character.toLowerCase(rest.charAt(0)) + rest.substring(1);
    }
}
