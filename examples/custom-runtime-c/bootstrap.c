/*
 * A minimal custom runtime in C: the starting point for a `provided`
 * function. It is the whole runtime and the function at once: it reads its
 * settings, loads its handler (here: picks one by the name in _HANDLER),
 * then loops on the Lambda Runtime API over plain HTTP/1.1:
 *
 *   GET  /2018-06-01/runtime/invocation/next           -> event + request id
 *   POST /2018-06-01/runtime/invocation/{id}/response  <- result
 *   POST /2018-06-01/runtime/invocation/{id}/error     <- error document
 *   POST /2018-06-01/runtime/init/error                <- when init fails
 *
 * AWS_LAMBDA_RUNTIME_API (host:port) says where the API is. One keep-alive
 * connection, no dependencies beyond libc; see docs/CUSTOM_RUNTIMES.md.
 *
 * Handlers: "stats" returns the event's size and the number of each JSON
 * token kind in it; "fail" reports a handled error; "crash" aborts (the
 * caller gets Runtime.ExitError).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 16384

static int api = -1;
static char host[64];
static int port;

static void die(const char *what) {
    fprintf(stderr, "[ERROR] %s: %s\n", what, strerror(errno));
    exit(1);
}

static void api_connect(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "[ERROR] AWS_LAMBDA_RUNTIME_API host %s is not an IPv4 address\n", host);
        exit(1);
    }
    api = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (api < 0) die("socket");
    int one = 1;
    setsockopt(api, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(api, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect(AWS_LAMBDA_RUNTIME_API)");
}

static void write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(api, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write(runtime API)");
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads one response; returns its status, fills the request id header (if
 * any) and a malloc'd body the caller frees. */
static int read_response(char *request_id, size_t id_len, char **body, size_t *body_len) {
    static char head[MAX_HEAD];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == sizeof head - 1) { errno = E2BIG; die("read(runtime API head)"); }
        ssize_t n = read(api, head + have, sizeof head - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("read(runtime API)");
        have += (size_t)n;
        head[have] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    int status = atoi(head + 9); /* "HTTP/1.1 200 OK" */
    size_t length = 0;
    if (request_id) request_id[0] = '\0';
    for (char *line = strstr(head, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "Content-Length:", 15) == 0) {
            length = strtoul(line + 15, NULL, 10);
        } else if (request_id && strncasecmp(line, "Lambda-Runtime-Aws-Request-Id:", 30) == 0) {
            const char *v = line + 30;
            while (*v == ' ') v++;
            size_t n = strcspn(v, "\r");
            if (n >= id_len) n = id_len - 1;
            memcpy(request_id, v, n);
            request_id[n] = '\0';
        }
    }
    char *buf = malloc(length + 1);
    if (!buf) die("malloc");
    size_t got = have - (size_t)(end + 4 - head);
    if (got > length) got = length;
    memcpy(buf, end + 4, got);
    while (got < length) {
        ssize_t n = read(api, buf + got, length - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("read(runtime API body)");
        got += (size_t)n;
    }
    buf[length] = '\0';
    *body = buf;
    *body_len = length;
    return status;
}

static int post(const char *path, const char *extra_headers, const char *body, size_t len) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /2018-06-01/runtime/%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                     path, host, port, len, extra_headers);
    write_all(head, (size_t)n);
    write_all(body, len);
    char *reply;
    size_t reply_len;
    int status = read_response(NULL, 0, &reply, &reply_len);
    free(reply);
    return status;
}

/* -- the function ---------------------------------------------------------- */
typedef int (*handler_fn)(const char *event, size_t len, char *out, size_t out_len);

static int stats(const char *event, size_t len, char *out, size_t out_len) {
    size_t strings = 0, numbers = 0, objects = 0, arrays = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = event[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = 0;
        } else if (c == '"') { in_string = 1; strings++; }
        else if (c == '{') objects++;
        else if (c == '[') arrays++;
        else if ((c == '-' || (c >= '0' && c <= '9')) && (i == 0 || strchr(":[, ", event[i - 1]))) numbers++;
    }
    return snprintf(out, out_len,
                    "{\"runtime\":\"c\",\"bytes\":%zu,\"strings\":%zu,\"numbers\":%zu,\"objects\":%zu,\"arrays\":%zu}",
                    len, strings, numbers, objects, arrays) < (int)out_len ? 0 : -1;
}

static int fail(const char *event, size_t len, char *out, size_t out_len) {
    (void)event;
    snprintf(out, out_len, "{\"errorType\":\"InvalidEvent\",\"errorMessage\":\"refused an event of %zu bytes\","
                           "\"stackTrace\":[]}", len);
    return -1;
}

static int crash(const char *event, size_t len, char *out, size_t out_len) {
    (void)event; (void)len; (void)out; (void)out_len;
    abort();
}

static const struct { const char *name; handler_fn fn; } HANDLERS[] = {
    {"stats", stats}, {"fail", fail}, {"crash", crash},
};

int main(void) {
    const char *where = getenv("AWS_LAMBDA_RUNTIME_API");
    if (!where || sscanf(where, "%63[^:]:%d", host, &port) != 2) {
        fprintf(stderr, "[ERROR] AWS_LAMBDA_RUNTIME_API is not set to host:port\n");
        return 1;
    }
    api_connect();

    const char *name = getenv("_HANDLER");
    handler_fn handler = NULL;
    for (size_t i = 0; i < sizeof HANDLERS / sizeof HANDLERS[0]; i++)
        if (name && strcmp(name, HANDLERS[i].name) == 0) handler = HANDLERS[i].fn;
    if (!handler) {
        char doc[256];
        int n = snprintf(doc, sizeof doc, "{\"errorType\":\"Runtime.HandlerNotFound\","
                                          "\"errorMessage\":\"no handler named %.64s: use stats, fail or crash\"}",
                         name ? name : "");
        post("init/error", "Lambda-Runtime-Function-Error-Type: Runtime.HandlerNotFound\r\n", doc, (size_t)n);
        return 1;
    }

    static char out[4096];
    for (;;) {
        static const char next[] = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: runtime\r\n\r\n";
        write_all(next, sizeof next - 1);
        char request_id[128], path[192], *event;
        size_t len;
        int status = read_response(request_id, sizeof request_id, &event, &len);
        if (status != 200 || !request_id[0]) {
            fprintf(stderr, "[ERROR] /next answered %d\n", status);
            return 1;
        }
        int failed = handler(event, len, out, sizeof out);
        free(event);
        snprintf(path, sizeof path, "invocation/%s/%s", request_id, failed ? "error" : "response");
        status = post(path, "", out, strlen(out));
        if (status != 202) {
            fprintf(stderr, "[ERROR] %s answered %d\n", path, status);
            return 1;
        }
    }
}
