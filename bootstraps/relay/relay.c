/*
 * Runtime API relay: pid 1 of a `provided` sandbox.
 *
 * A custom runtime ships an executable `bootstrap` and talks the AWS Lambda
 * Runtime API over HTTP. The relay serves that API on 127.0.0.1:9001 inside
 * the sandbox's own network namespace and speaks the agent's frame protocol
 * (drawn in bootstraps/python/bootstrap.py) on the control socket, so the
 * agent never parses HTTP from a sandbox:
 *
 *   agent ══ frames P/I ══> relay (pid 1) ══ HTTP :9001 ══> bootstrap
 *         <══ R/E/S/F ═══     │                            (child)
 *                             └── posix_spawn, reaps, exits with its status
 *
 *   GET  /2018-06-01/runtime/invocation/next          200 event + Lambda-Runtime-* headers
 *   POST /2018-06-01/runtime/invocation/{id}/response 202 | 400 | 403 | 413
 *   POST /2018-06-01/runtime/invocation/{id}/error    202 | 400 | 403 | 413
 *   POST /2018-06-01/runtime/init/error               202 | 403
 *
 * Frames: kind (1 byte) | length (u32 BE) | body. R = u64 start_ns | u64
 * ready_ns (CLOCK_REALTIME); E = error JSON; S/F = u64 handler_ns | body;
 * I = request id \n deadline ms \n ARN \n client context \n payload; P (stem
 * cell) = JSON object of the function's environment variables.
 *
 * The first /next completes init (frame R). An error before it, through
 * /init/error, is frame E. Bodies may be chunked with trailers (the Go client
 * always sends them; a streamed response reports a mid-stream error in
 * Lambda-Runtime-Function-Error-Type and -Body trailers). A streamed response
 * is buffered and returned whole. The bootstrap's exit ends the relay with the
 * same status (128 + signal when killed), so the agent reports it as
 * Runtime.ExitError.
 *
 * C, libc only, linked statically: it sits on every warm Invoke of a custom
 * runtime and its CPU time counts against the function's own CPU quota. It
 * runs as the function's uid, inside the function's trust zone: anything the
 * bootstrap does to it harms only its own sandbox.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT 9001
#define API "/2018-06-01/runtime/"
#define MAX_BODY (6 * 1024 * 1024 + 100) /* RIE's MaxPayloadSize: 6 MiB + 100 bytes */
#define MAX_HEAD (64 * 1024)
#define MAX_FD 1024                        /* connections beyond it are refused */
#define JSON_DEPTH 512

extern char **environ;

static const char *const BOOTSTRAPS[] = {"/var/task/bootstrap", "/opt/bootstrap"};
/* Variables of the agent-relay contract, never shown to the bootstrap. */
static const char *const PRIVATE_ENV[] = {"_RUNTIME_CONTROL_FD", "_RUNTIME_STEM_CELL"};

/* ---- growable byte buffers ------------------------------------------- */
struct buf {
    char *p;
    size_t len, cap;
};

static void fatal(const char *call) {
    fprintf(stderr, "relay: %s: %s\n", call, strerror(errno));
    exit(1);
}

static void reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) fatal("realloc");
    b->p = p;
    b->cap = cap;
}

static void add(struct buf *b, const void *data, size_t n) {
    reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void adds(struct buf *b, const char *s) { add(b, s, strlen(s)); }

static void addf(struct buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void consume(struct buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- JSON: just what error documents and the P frame need ------------- */

/* Length of the valid UTF-8 sequence at s (1-4), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || len > n || c > 0xf4) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0;              /* overlong */
    if (c == 0xed && s[1] >= 0xa0) return 0;             /* surrogate */
    if (c == 0xf0 && s[1] < 0x90) return 0;              /* overlong */
    if (c == 0xf4 && s[1] >= 0x90) return 0;             /* > U+10FFFF */
    return len;
}

/* A JSON string of arbitrary bytes; invalid UTF-8 becomes U+FFFD. */
static void json_string(struct buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    reserve(b, n + 2);
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            add(b, e, 2);
        } else if (c == '\n') {
            add(b, "\\n", 2);
        } else if (c == '\r') {
            add(b, "\\r", 2);
        } else if (c == '\t') {
            add(b, "\\t", 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            add(b, e, 6);
        } else if (c >= 0x80) {
            size_t len = utf8_len((const unsigned char *)s + i, n - i);
            if (len == 0) {
                adds(b, "\\ufffd");
                i++;
            } else {
                add(b, s + i, len);
                i += len;
            }
            continue;
        } else {
            add(b, s + i, 1);
        }
        i++;
    }
    add(b, "\"", 1);
}

static void error_body(struct buf *b, const char *type, const char *msg, size_t msg_len) {
    adds(b, "{\"errorMessage\": ");
    json_string(b, msg, msg_len);
    adds(b, ", \"errorType\": ");
    json_string(b, type, strlen(type));
    adds(b, "}");
}

struct json {
    const unsigned char *p, *end;
    int depth;
};

static void skip_ws(struct json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Skips white space, then consumes `c` if it comes next. */
static int eat(struct json *j, char c) {
    skip_ws(j);
    if (j->p < j->end && *j->p == (unsigned char)c) {
        j->p++;
        return 1;
    }
    return 0;
}

static int put_utf8(struct buf *out, unsigned cp) {
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (unsigned char)cp, n = 1;
    else if (cp < 0x800) u[0] = 0xc0 | cp >> 6, u[1] = 0x80 | (cp & 63), n = 2;
    else if (cp < 0x10000) u[0] = 0xe0 | cp >> 12, u[1] = 0x80 | (cp >> 6 & 63), u[2] = 0x80 | (cp & 63), n = 3;
    else u[0] = 0xf0 | cp >> 18, u[1] = 0x80 | (cp >> 12 & 63), u[2] = 0x80 | (cp >> 6 & 63),
         u[3] = 0x80 | (cp & 63), n = 4;
    if (out) add(out, u, n);
    return (int)n;
}

static int hex4(const unsigned char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d = c - '0' < 10 ? c - '0' : (c | 32) - 'a' < 6 ? (c | 32) - 'a' + 10 : 16;
        if (d == 16) return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* A string at j->p (the opening quote), decoded into out (may be NULL).
 * Returns its decoded length, -1 if malformed. */
static long json_str(struct json *j, struct buf *out) {
    long n = 0;
    j->p++;
    while (j->p < j->end) {
        unsigned c = *j->p;
        if (c == '"') {
            j->p++;
            return n;
        }
        if (c < 0x20) return -1;
        if (c != '\\') {
            size_t len = utf8_len(j->p, (size_t)(j->end - j->p));
            if (len == 0) return -1;
            if (out) add(out, j->p, len);
            j->p += len;
            n += (long)len;
            continue;
        }
        if (j->end - j->p < 2) return -1;
        static const char escapes[] = "\"\\/bfnrt", decoded[] = "\"\\/\b\f\n\r\t";
        const char *simple = j->p[1] ? strchr(escapes, j->p[1]) : NULL;
        if (simple) {
            if (out) add(out, &decoded[simple - escapes], 1);
            j->p += 2;
            n++;
            continue;
        }
        unsigned cp, lo;
        if (j->p[1] != 'u' || j->end - j->p < 6 || hex4(j->p + 2, &cp)) return -1;
        j->p += 6;
        if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
            !hex4(j->p + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            j->p += 6;
        }
        n += put_utf8(out, cp);
    }
    return -1;
}

static int json_value(struct json *j, int *truthy);

/* An object; when type_truthy is set, reports whether its "errorType" member is truthy. */
static int json_object(struct json *j, int *truthy, int *type_truthy) {
    struct buf key = {0};
    int rc = -1, members = 0;
    j->p++;
    if (eat(j, '}')) {
        rc = 0;
        goto out;
    }
    do {
        skip_ws(j);
        if (j->p >= j->end || *j->p != '"') goto out;
        key.len = 0;
        if (json_str(j, type_truthy ? &key : NULL) < 0 || !eat(j, ':')) goto out;
        skip_ws(j);
        int member_truthy;
        if (json_value(j, &member_truthy)) goto out;
        if (type_truthy && key.len == 9 && !memcmp(key.p, "errorType", 9)) *type_truthy = member_truthy;
        members++;
    } while (eat(j, ','));
    if (eat(j, '}')) rc = 0;
out:
    free(key.p);
    *truthy = members > 0;
    return rc;
}

static int json_value(struct json *j, int *truthy) {
    if (j->p >= j->end || ++j->depth > JSON_DEPTH) return -1;
    int rc = -1;
    unsigned c = *j->p;
    *truthy = 1;
    if (c == '{') {
        rc = json_object(j, truthy, NULL);
    } else if (c == '[') {
        int items = 0, item_truthy, ok = 1;
        j->p++;
        if (!eat(j, ']')) {
            do {
                skip_ws(j);
                if (json_value(j, &item_truthy)) {
                    ok = 0;
                    break;
                }
                items++;
            } while (eat(j, ','));
            ok = ok && eat(j, ']');
        }
        rc = ok ? 0 : -1;
        *truthy = items > 0;
    } else if (c == '"') {
        long n = json_str(j, NULL);
        rc = n < 0 ? -1 : 0;
        *truthy = n > 0;
    } else {
        static const char *const words[] = {"true", "false", "null", "NaN", "Infinity", "-Infinity"};
        for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
            size_t len = strlen(words[i]);
            if ((size_t)(j->end - j->p) >= len && !memcmp(j->p, words[i], len)) {
                j->p += len;
                *truthy = !(i == 1 || i == 2);
                j->depth--;
                return 0;
            }
        }
        /* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? ; zero unless a mantissa digit is not 0 */
        const unsigned char *p = j->p;
        int nonzero = 0;
        if (p < j->end && *p == '-') p++;
        if (p >= j->end || *p < '0' || *p > '9') return -1;
        if (*p == '0') p++;
        else
            while (p < j->end && *p >= '0' && *p <= '9') nonzero = 1, p++;
        if (p < j->end && *p == '.') {
            if (++p >= j->end || *p < '0' || *p > '9') return -1;
            while (p < j->end && *p >= '0' && *p <= '9') nonzero |= *p++ != '0';
        }
        if (p < j->end && (*p == 'e' || *p == 'E')) {
            if (++p < j->end && (*p == '+' || *p == '-')) p++;
            if (p >= j->end || *p < '0' || *p > '9') return -1;
            while (p < j->end && *p >= '0' && *p <= '9') p++;
        }
        j->p = p;
        *truthy = nonzero;
        rc = 0;
    }
    j->depth--;
    return rc;
}

/* Is body one JSON object whose "errorType" is truthy (AWS passes such a body through)? */
static int is_error_document(const char *body, size_t n) {
    struct json j = {(const unsigned char *)body, (const unsigned char *)body + n, 0};
    int truthy, type_truthy = 0;
    skip_ws(&j);
    if (j.p >= j.end || *j.p != '{') return 0;
    if (json_object(&j, &truthy, &type_truthy)) return 0;
    skip_ws(&j);
    return j.p == j.end && type_truthy;
}

/* The body unchanged if it is an error document, else one of `type` (the
 * header's, else default_type) with the body as its message. */
static void error_document(struct buf *out, const char *body, size_t n, const char *type) {
    if (is_error_document(body, n)) add(out, body, n);
    else error_body(out, type, body, n);
}

/* Lenient base64 (characters outside the alphabet are skipped), -1 on a dangling sextet. */
static int base64_decode(struct buf *out, const char *s) {
    unsigned acc = 0, bits = 0, count = 0;
    for (; *s && *s != '='; s++) {
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *hit = strchr(a, *s);
        if (!hit) continue;
        acc = acc << 6 | (unsigned)(hit - a);
        bits += 6;
        count++;
        if (bits >= 8) {
            bits -= 8;
            char byte = (char)(acc >> bits & 0xff);
            add(out, &byte, 1);
        }
    }
    return count % 4 == 1 ? -1 : 0;
}

/* ---- HTTP requests ------------------------------------------------------ */
struct request {
    struct buf head;        /* a copy of the head, header names lower-cased in place */
    char *method, *path;
    const char *transfer_encoding, *content_length, *connection, *response_mode, *error_type;
    struct buf body;
    int body_too_large;     /* refused: the caller discards the rest as it arrives */
    struct buf error_type_trailer, error_body_trailer;
    int has_error_type_trailer;
    size_t used;            /* bytes of the connection's buffer this request spans */
    const char *bad;        /* why it is not HTTP */
};

static const char *find(const char *s, size_t n, const char *what, size_t wn) {
    return memmem(s, n, what, wn);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

static char *strip(char *s, char *end) {
    while (s < end && is_space(*s)) s++;
    while (end > s && is_space(end[-1])) end--;
    *end = '\0';
    return s;
}

static int contains_ci(const char *s, size_t n, const char *what) {
    size_t wn = strlen(what);
    for (size_t i = 0; i + wn <= n; i++)
        if (!strncasecmp(s + i, what, wn)) return 1;
    return 0;
}

/* Parses one request from the front of buf: 1 complete (or refused as too
 * large), 0 incomplete, -1 not HTTP (r->bad says why). */
static int parse(const char *buf, size_t len, struct request *r) {
    const char *end = find(buf, len, "\r\n\r\n", 4);
    if (!end) {
        if (len > MAX_HEAD) return r->bad = "request head too large", -1;
        return 0;
    }
    r->head.len = 0;
    add(&r->head, buf, (size_t)(end - buf) + 1);
    char *h = r->head.p, *hend = h + (end - buf);
    *hend = '\0';
    r->transfer_encoding = r->content_length = r->connection = r->response_mode = r->error_type = NULL;
    r->body.len = r->error_type_trailer.len = r->error_body_trailer.len = 0;
    r->body_too_large = r->has_error_type_trailer = 0;

    char *eol = strstr(h, "\r\n");
    char *line_end = eol ? eol : hend;
    char *sp1 = memchr(h, ' ', (size_t)(line_end - h));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (!sp2 || memchr(sp2 + 1, ' ', (size_t)(line_end - sp2 - 1)) || line_end - sp2 - 1 < 7 ||
        strncmp(sp2 + 1, "HTTP/1.", 7))
        return r->bad = "malformed request line", -1;
    *sp1 = *sp2 = '\0';
    r->method = h;
    r->path = sp1 + 1;
    for (char *line = eol ? eol + 2 : hend; line < hend;) {
        char *next = strstr(line, "\r\n");
        char *le = next ? next : hend;
        char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line || is_space(line[0]) || is_space(colon[-1]))
            return r->bad = "malformed header line", -1;
        *colon = '\0';
        for (char *c = line; c < colon; c++)
            if (*c >= 'A' && *c <= 'Z') *c |= 32;
        const char *value = strip(colon + 1, le);
        if (!strcmp(line, "transfer-encoding")) r->transfer_encoding = value;
        else if (!strcmp(line, "content-length")) r->content_length = value;
        else if (!strcmp(line, "connection")) r->connection = value;
        else if (!strcmp(line, "lambda-runtime-function-response-mode")) r->response_mode = value;
        else if (!strcmp(line, "lambda-runtime-function-error-type")) r->error_type = value;
        line = next ? next + 2 : hend;
    }
    size_t pos = (size_t)(end - buf) + 4;

    if (r->transfer_encoding && contains_ci(r->transfer_encoding, strlen(r->transfer_encoding), "chunked")) {
        size_t total = 0;
        for (;;) {
            const char *crlf = find(buf + pos, len - pos, "\r\n", 2);
            if (!crlf) return 0;
            size_t size = 0, digits = 0;
            const char *p = buf + pos;
            while (p < crlf && is_space(*p)) p++;
            for (; p < crlf; p++, digits++) {
                unsigned c = (unsigned char)*p, d = c - '0' < 10 ? c - '0' : (c | 32) - 'a' < 6 ? (c | 32) - 'a' + 10 : 16;
                if (d == 16) break;
                if (size > (SIZE_MAX >> 4)) return r->bad = "malformed chunk size", -1;
                size = size << 4 | d;
            }
            while (p < crlf && is_space(*p)) p++;
            if (!digits || (p < crlf && *p != ';')) return r->bad = "malformed chunk size", -1;
            pos = (size_t)(crlf - buf) + 2;
            if (size == 0) break;
            total += size;
            if (total > MAX_BODY) {
                r->body_too_large = 1;
                r->used = pos;
                return 1;
            }
            if (len < pos + size + 2) return 0;
            add(&r->body, buf + pos, size);
            if (memcmp(buf + pos + size, "\r\n", 2)) return r->bad = "chunk not followed by CRLF", -1;
            pos += size + 2;
        }
        for (;;) { /* trailer section, ended by an empty line */
            const char *crlf = find(buf + pos, len - pos, "\r\n", 2);
            if (!crlf) return 0;
            const char *line = buf + pos;
            pos = (size_t)(crlf - buf) + 2;
            if (crlf == line) break;
            const char *colon = memchr(line, ':', (size_t)(crlf - line));
            const char *vend = crlf, *v = colon ? colon + 1 : crlf, *nend = colon ? colon : crlf;
            while (line < nend && is_space(*line)) line++;
            while (nend > line && is_space(nend[-1])) nend--;
            while (v < vend && is_space(*v)) v++;
            while (vend > v && is_space(vend[-1])) vend--;
            size_t nlen = (size_t)(nend - line);
            if (nlen == 34 && !strncasecmp(line, "lambda-runtime-function-error-type", nlen)) {
                r->error_type_trailer.len = 0;
                add(&r->error_type_trailer, v, (size_t)(vend - v));
                add(&r->error_type_trailer, "", 1);
                r->has_error_type_trailer = vend > v;
            } else if (nlen == 34 && !strncasecmp(line, "lambda-runtime-function-error-body", nlen)) {
                r->error_body_trailer.len = 0;
                add(&r->error_body_trailer, v, (size_t)(vend - v));
                add(&r->error_body_trailer, "", 1);
            }
        }
        r->used = pos;
        return 1;
    }
    size_t length = 0;
    if (r->content_length) {
        const char *p = r->content_length;
        if (!*p) return r->bad = "malformed Content-Length", -1;
        for (; *p; p++) {
            if (*p < '0' || *p > '9' || length > (SIZE_MAX - 9) / 10) return r->bad = "malformed Content-Length", -1;
            length = length * 10 + (size_t)(*p - '0');
        }
    }
    if (length > MAX_BODY) {
        r->body_too_large = 1;
        r->used = pos + length;
        return 1;
    }
    if (len < pos + length) return 0;
    add(&r->body, buf + pos, length);
    r->used = pos + length;
    return 1;
}

/* ---- the relay -------------------------------------------------------- */
struct conn {
    int fd;
    struct buf in;
    int continue_sent;
    size_t discard;         /* bytes of a refused body still to arrive */
};

static struct {
    int ctl, epoll, listener, pidfd;
    pid_t child;
    uint64_t start_ns, delivered_ns;
    int ready;              /* first /next seen (R sent) */
    int waiting;            /* connection parked in /next, -1 if none */
    int queued;             /* an invoke frame not yet delivered is in `invoke` */
    struct buf frames, invoke, current, out, scratch;
    struct conn *conns[MAX_FD];
    struct request req;
} R = {.waiting = -1, .listener = -1, .pidfd = -1};

/* Drops `sent` bytes from the front of msg's vector. */
static void advance(struct msghdr *msg, size_t sent) {
    while (msg->msg_iovlen && sent >= msg->msg_iov->iov_len) {
        sent -= msg->msg_iov->iov_len;
        msg->msg_iov++;
        msg->msg_iovlen--;
    }
    if (msg->msg_iovlen) {
        msg->msg_iov->iov_base = (char *)msg->msg_iov->iov_base + sent;
        msg->msg_iov->iov_len -= sent;
    }
}

static void send_frame(char kind, const void *a, size_t alen, const void *b, size_t blen) {
    uint32_t n = (uint32_t)(alen + blen);
    unsigned char hdr[5] = {(unsigned char)kind, n >> 24, n >> 16 & 0xff, n >> 8 & 0xff, n & 0xff};
    struct iovec iov[3] = {{hdr, 5}, {(void *)a, alen}, {(void *)b, blen}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    while (msg.msg_iovlen) {
        ssize_t sent = sendmsg(R.ctl, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE || errno == ECONNRESET) exit(0); /* the agent is gone */
            fatal("sendmsg(control socket)");
        }
        advance(&msg, (size_t)sent);
    }
}

static void send_ready(void) {
    unsigned char t[16];
    uint64_t v[2] = {R.start_ns, clock_ns(CLOCK_REALTIME)};
    for (int i = 0; i < 16; i++) t[i] = (unsigned char)(v[i / 8] >> (56 - 8 * (i % 8)));
    send_frame('R', t, 16, NULL, 0);
}

/* S or F for the current invocation. */
static void reply(char kind, const void *body, size_t n) {
    uint64_t ns = clock_ns(CLOCK_MONOTONIC) - R.delivered_ns;
    unsigned char t[8];
    for (int i = 0; i < 8; i++) t[i] = (unsigned char)(ns >> (56 - 8 * i));
    R.current.len = 0;
    send_frame(kind, t, 8, body, n);
}

/* Ends the current invocation with an error the runtime did not send. */
static void fail(const char *type, const char *msg) {
    if (!R.current.len) return;
    struct buf m = {0}, doc = {0};
    addf(&m, "RequestId: %.*s Error: %s", (int)R.current.len, R.current.p, msg);
    error_body(&doc, type, m.p, m.len);
    reply('F', doc.p, doc.len);
    free(m.p);
    free(doc.p);
}

static void drop(int fd) {
    struct conn *c = R.conns[fd];
    if (!c) return;
    R.conns[fd] = NULL;
    epoll_ctl(R.epoll, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(c->in.p);
    free(c);
    if (R.waiting == fd) R.waiting = -1;
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    default: return "Internal Server Error";
    }
}

/* Writes one response; `extra` holds header lines ending in CRLF, or NULL. */
static void respond(int fd, int status, const char *body, size_t n, const char *extra, int close_after) {
    struct buf *h = &R.out;
    h->len = 0;
    addf(h, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (extra) adds(h, extra);
    addf(h, "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n", n,
         close_after ? "Connection: close\r\n" : "");
    struct iovec iov[2] = {{h->p, h->len}, {(void *)body, n}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    int blocking = 0;
    while (msg.msg_iovlen) {
        ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN && !blocking) {
                /* A runtime that stops reading stalls only its own sandbox. */
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                blocking = 1;
                continue;
            }
            close_after = 1;
            break;
        }
        advance(&msg, (size_t)sent);
    }
    if (blocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (close_after) drop(fd);
}

static void respond_error(int fd, int status, const char *type, const char *msg, int close_after) {
    R.scratch.len = 0;
    error_body(&R.scratch, type, msg, strlen(msg));
    respond(fd, status, R.scratch.p, R.scratch.len, NULL, close_after);
}

static void deliver(void) {
    char *f[4], *p = R.invoke.p, *end = p + R.invoke.len;
    for (int i = 0; i < 4; i++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) exit(2); /* the agent broke the protocol */
        *nl = '\0';
        f[i] = p;
        p = nl + 1;
    }
    unsigned char rnd[20];
    char hex[41];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) fatal("getrandom");
    for (int i = 0; i < 20; i++) sprintf(hex + 2 * i, "%02x", rnd[i]);
    struct buf *h = &R.scratch;
    h->len = 0;
    addf(h, "Lambda-Runtime-Aws-Request-Id: %s\r\nLambda-Runtime-Deadline-Ms: %s\r\n"
            "Lambda-Runtime-Invoked-Function-Arn: %s\r\nLambda-Runtime-Trace-Id: Root=1-%08llx-%.24s;Parent=%.16s;"
            "Sampled=0\r\n", f[0], f[1], f[2], (unsigned long long)time(NULL), hex, hex + 24);
    if (*f[3]) addf(h, "Lambda-Runtime-Client-Context: %s\r\n", f[3]);
    add(h, "", 1);
    R.current.len = 0;
    adds(&R.current, f[0]);
    R.queued = 0;
    int fd = R.waiting;
    R.waiting = -1;
    R.delivered_ns = clock_ns(CLOCK_MONOTONIC);
    respond(fd, 200, p, (size_t)(end - p), h->p, 0);
}

static void on_control(void) {
    reserve(&R.frames, 65536);
    ssize_t n = read(R.ctl, R.frames.p + R.frames.len, R.frames.cap - R.frames.len);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return;
        fatal("read(control socket)");
    }
    if (n == 0) exit(0); /* the agent is gone; pid 1 exiting ends the sandbox */
    R.frames.len += (size_t)n;
    while (R.frames.len >= 5) {
        const unsigned char *h = (const unsigned char *)R.frames.p;
        size_t length = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
        if (R.frames.len < 5 + length) return;
        if (h[0] != 'I' || R.queued || R.current.len) exit(2); /* the agent broke the protocol */
        R.invoke.len = 0;
        add(&R.invoke, R.frames.p + 5, length);
        consume(&R.frames, 5 + length);
        R.queued = 1;
        if (R.waiting >= 0) deliver();
    }
}

static void on_init_error(int fd, struct request *r) {
    if (R.ready) {
        respond_error(fd, 403, "InvalidStateTransition", "init is already complete", 0);
        return;
    }
    respond(fd, 202, "{\"status\":\"OK\"}", 15, NULL, 0);
    R.scratch.len = 0;
    if (r->body_too_large)
        error_body(&R.scratch, "Runtime.InitError", "init error body too large", 25);
    else
        error_document(&R.scratch, r->body.p ? r->body.p : "", r->body.len,
                       r->error_type && *r->error_type ? r->error_type : "Runtime.Unknown");
    send_frame('E', R.scratch.p, R.scratch.len, NULL, 0);
}

static void handle(int fd, struct request *r) {
    size_t api = strlen(API);
    if (strncmp(r->path, API, api)) {
        R.scratch.len = 0;
        addf(&R.scratch, "unknown path %s", r->path);
        add(&R.scratch, "", 1);
        respond_error(fd, 404, "NotFound", R.scratch.p, 0);
        return;
    }
    char *route = r->path + api;
    route[strcspn(route, "?")] = '\0';
    if (!strcmp(route, "invocation/next")) {
        if (strcmp(r->method, "GET")) {
            respond_error(fd, 405, "MethodNotAllowed", "use GET", 0);
        } else if (R.current.len) {
            char called[300], busy[300];
            snprintf(called, sizeof called, "Runtime called /next before answering request %.*s",
                     (int)R.current.len, R.current.p);
            snprintf(busy, sizeof busy, "request %.*s is in progress: post its response or error first",
                     (int)R.current.len, R.current.p);
            fail("Runtime.InvalidResponse", called);
            respond_error(fd, 403, "InvalidStateTransition", busy, 0);
        } else {
            if (R.waiting >= 0 && R.waiting != fd) drop(R.waiting); /* a newer /next replaces an abandoned one */
            R.waiting = fd;
            if (!R.ready) {
                R.ready = 1;
                send_ready();
            } else if (R.queued) {
                deliver();
            }
        }
        return;
    }
    int init_error = !strcmp(route, "init/error");
    char *id = NULL, *kind = NULL;
    if (!init_error && !strncmp(route, "invocation/", 11)) {
        id = route + 11;
        char *slash = strchr(id, '/');
        if (slash) {
            *slash = '\0';
            kind = slash + 1;
        }
    }
    if (!init_error && (!kind || strchr(kind, '/') || (strcmp(kind, "response") && strcmp(kind, "error")))) {
        if (kind) kind[-1] = '/';
        R.scratch.len = 0;
        addf(&R.scratch, "unknown path %s", r->path);
        add(&R.scratch, "", 1);
        respond_error(fd, 404, "NotFound", R.scratch.p, 0);
        return;
    }
    if (strcmp(r->method, "POST")) {
        respond_error(fd, 405, "MethodNotAllowed", "use POST", 0);
        return;
    }
    if (init_error) {
        on_init_error(fd, r);
        return;
    }
    if (!R.current.len || strlen(id) != R.current.len || memcmp(id, R.current.p, R.current.len)) {
        respond_error(fd, 400, "InvalidRequestID", "Invalid request ID", 0);
        return;
    }
    if (r->response_mode && strcmp(r->response_mode, "streaming")) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid response mode '%.256s'", r->response_mode);
        respond_error(fd, 400, "InvalidFunctionResponseMode", "Invalid function response mode", 0);
        fail("Runtime.InvalidResponseModeHeader", msg);
        return;
    }
    char limit[160];
    if (r->body_too_large) {
        /* A chunked body cannot be skipped without parsing it: that connection closes. */
        snprintf(limit, sizeof limit, "Exceeded maximum allowed payload size (%d bytes).", MAX_BODY);
        respond_error(fd, 413, "RequestEntityTooLarge", limit, r->content_length == NULL);
        snprintf(limit, sizeof limit,
                 "Response payload size exceeded maximum allowed payload size (%d bytes).", MAX_BODY);
        R.scratch.len = 0;
        error_body(&R.scratch, "Function.ResponseSizeTooLarge", limit, strlen(limit));
        reply('F', R.scratch.p, R.scratch.len);
        return;
    }
    respond(fd, 202, "{\"status\":\"OK\"}", 15, NULL, 0);
    const char *body = r->body.p ? r->body.p : "";
    if (!strcmp(kind, "response") && !r->has_error_type_trailer) {
        reply('S', body, r->body.len);
        return;
    }
    R.scratch.len = 0;
    if (r->has_error_type_trailer) { /* a streamed response that failed part-way */
        const char *type = r->error_type_trailer.p;
        struct buf decoded = {0};
        if (base64_decode(&decoded, r->error_body_trailer.len ? r->error_body_trailer.p : "") == 0)
            error_document(&R.scratch, decoded.p ? decoded.p : "", decoded.len, type);
        else
            error_body(&R.scratch, type, "streamed response failed", 24);
        free(decoded.p);
    } else {
        error_document(&R.scratch, body, r->body.len,
                       r->error_type && *r->error_type ? r->error_type : "Function.Unknown");
    }
    reply('F', R.scratch.p, R.scratch.len);
}

static void on_readable(int fd) {
    struct conn *c = R.conns[fd];
    reserve(&c->in, 65536);
    ssize_t n = recv(fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        drop(fd);
        return;
    }
    size_t got = (size_t)n;
    if (c->discard) { /* still discarding a refused body */
        size_t skip = c->discard < got ? c->discard : got;
        c->discard -= skip;
        memmove(c->in.p + c->in.len, c->in.p + c->in.len + skip, got - skip);
        got -= skip;
    }
    c->in.len += got;
    struct request *r = &R.req;
    while (R.conns[fd] == c && c->in.len) {
        int rc = parse(c->in.p, c->in.len, r);
        if (rc < 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "Runtime sent invalid HTTP: %s", r->bad);
            fail("Runtime.InvalidResponse", msg);
            respond_error(fd, 400, "InvalidRequest", r->bad, 1);
            return;
        }
        if (rc == 0) {
            size_t head = c->in.len < MAX_HEAD ? c->in.len : MAX_HEAD;
            if (!c->continue_sent && find(c->in.p, c->in.len, "\r\n\r\n", 4) &&
                contains_ci(c->in.p, head, "100-continue")) {
                c->continue_sent = 1; /* libcurl waits a second for this before sending a body */
                send(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL);
            }
            return;
        }
        c->discard = r->used > c->in.len ? r->used - c->in.len : 0;
        consume(&c->in, r->used);
        c->continue_sent = 0;
        int close_after = r->connection && !strcasecmp(r->connection, "close");
        handle(fd, r);
        if (R.conns[fd] == c && close_after) drop(fd);
    }
}

static void on_accept(void) {
    for (;;) {
        int fd = accept4(R.listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (fd >= MAX_FD) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) fatal("calloc");
        c->fd = fd;
        R.conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(R.epoll, EPOLL_CTL_ADD, fd, &ev)) fatal("epoll_ctl(connection)");
    }
}

/* ---- the bootstrap process --------------------------------------------- */

/* Starts the bootstrap; on failure fills `err` with the init error. */
static int spawn(struct buf *err) {
    const char *path = NULL;
    for (size_t i = 0; i < sizeof BOOTSTRAPS / sizeof *BOOTSTRAPS && !path; i++)
        if (access(BOOTSTRAPS[i], F_OK) == 0) path = BOOTSTRAPS[i];
    if (!path) {
        const char *m = "Couldn't find valid bootstrap(s): ['/var/task/bootstrap', '/opt/bootstrap']";
        error_body(err, "Runtime.InvalidEntrypoint", m, strlen(m));
        return -1;
    }
    for (size_t i = 0; i < sizeof PRIVATE_ENV / sizeof *PRIVATE_ENV; i++) unsetenv(PRIVATE_ENV[i]);
    char api[32];
    snprintf(api, sizeof api, "127.0.0.1:%d", PORT);
    setenv("AWS_LAMBDA_RUNTIME_API", api, 1);
    fcntl(R.ctl, F_SETFD, FD_CLOEXEC);
    posix_spawnattr_t attr;
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {(char *)path, NULL};
    int rc = posix_spawn(&R.child, path, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (rc) {
        char m[300], *e = strerror(rc);
        int n = snprintf(m, sizeof m, "fork/exec %s: ", path);
        for (; *e && n < (int)sizeof m - 1; e++) m[n++] = (char)(*e >= 'A' && *e <= 'Z' ? *e | 32 : *e);
        m[n] = '\0';
        error_body(err, "Runtime.InvalidEntrypoint", m, (size_t)n);
        return -1;
    }
    R.pidfd = (int)syscall(SYS_pidfd_open, R.child, 0);
    if (R.pidfd < 0) fatal("pidfd_open");
    return 0;
}

/* Collects every exited process (pid 1 inherits orphans); returns 1 with the
 * bootstrap's wait status once it has exited. */
static int reap(int *status) {
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0) return 0;
        if (pid == R.child) {
            *status = st;
            return 1;
        }
    }
}

/* Stem cell: blocks until the agent has attached the code and sends the
 * function's environment (frame P); returns when it began. */
static uint64_t await_specialisation(void) {
    struct buf *f = &R.frames;
    size_t length = 0;
    uint64_t began = 0;
    for (;;) {
        if (f->len >= 5) {
            const unsigned char *h = (const unsigned char *)f->p;
            length = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
            if (f->len >= 5 + length) break;
        }
        reserve(f, 65536);
        ssize_t n = read(R.ctl, f->p + f->len, f->cap - f->len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fatal("read(control socket)");
        if (n == 0) exit(0);
        if (!began) began = clock_ns(CLOCK_REALTIME);
        f->len += (size_t)n;
    }
    if (f->p[0] != 'P') exit(2);
    struct json j = {(const unsigned char *)f->p + 5, (const unsigned char *)f->p + 5 + length, 0};
    struct buf key = {0}, value = {0};
    if (!eat(&j, '{')) exit(2);
    if (!eat(&j, '}')) {
        do {
            key.len = value.len = 0;
            skip_ws(&j);
            if (j.p >= j.end || *j.p != '"' || json_str(&j, &key) < 0 || !eat(&j, ':')) exit(2);
            skip_ws(&j);
            if (j.p >= j.end || *j.p != '"' || json_str(&j, &value) < 0) exit(2);
            add(&key, "", 1);
            add(&value, "", 1);
            setenv(key.p, value.p, 1);
        } while (eat(&j, ','));
        if (!eat(&j, '}')) exit(2);
    }
    free(key.p);
    free(value.p);
    consume(f, 5 + length);
    return began;
}

static void watch(int fd) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(R.epoll, EPOLL_CTL_ADD, fd, &ev)) fatal("epoll_ctl");
}

int main(void) {
    R.start_ns = clock_ns(CLOCK_REALTIME);
    const char *ctl = getenv("_RUNTIME_CONTROL_FD");
    if (!ctl) {
        fprintf(stderr, "relay: _RUNTIME_CONTROL_FD is not set: the agent starts the relay\n");
        return 2;
    }
    R.ctl = atoi(ctl);
    if (getenv("_RUNTIME_STEM_CELL")) {
        send_ready();
        R.start_ns = await_specialisation();
    }
    const char *task = getenv("LAMBDA_TASK_ROOT");
    if (chdir(task ? task : "/var/task")) fatal("chdir(LAMBDA_TASK_ROOT)");
    struct buf err = {0};
    R.listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (R.listener < 0) fatal("socket");
    int one = 1;
    setsockopt(R.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(R.listener, (struct sockaddr *)&addr, sizeof addr) || listen(R.listener, 16)) {
        char m[128];
        int n = snprintf(m, sizeof m, "bind(127.0.0.1:%d): %s", PORT, strerror(errno));
        error_body(&err, "Runtime.RelayError", m, (size_t)n);
        send_frame('E', err.p, err.len, NULL, 0);
        return 1;
    }
    if (spawn(&err)) {
        send_frame('E', err.p, err.len, NULL, 0);
        return 1;
    }
    R.epoll = epoll_create1(EPOLL_CLOEXEC);
    if (R.epoll < 0) fatal("epoll_create1");
    watch(R.ctl);
    watch(R.listener);
    watch(R.pidfd);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(R.epoll, events, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fatal("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd, status;
            if (fd == R.ctl) {
                on_control();
            } else if (fd == R.listener) {
                on_accept();
            } else if (fd == R.pidfd) {
                if (reap(&status)) return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
            } else if (fd < MAX_FD && R.conns[fd]) {
                on_readable(fd);
            }
        }
    }
}
