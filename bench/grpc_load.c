/* grpc_load: a closed-loop gRPC unary load generator over plaintext HTTP/2 (libnghttp2), every request new.
 *
 * h2load can only repeat one fixed body, and a repeated event id is a duplicate that stores nothing, so this
 * sends a template body in which every occurrence of a fixed-width placeholder is replaced by a per-request
 * counter. It keeps --in-flight streams open across --connections connections, checks grpc-status in the
 * trailers, and prints one JSON line: completions per second in the measured window, errors, latency.
 *
 * With --rate R --count N it is an open-loop client instead: request k is due at start + k/R and goes out on
 * connection k mod --connections as soon as the loop sees it due, whatever is still in flight; its latency is
 * timed from when it was due, not from when it went out, so a client or server that falls behind shows as
 * latency instead of as a slower schedule. --times FILE receives one line per request:
 * "counter due_at sent_at acked_at" (CLOCK_MONOTONIC seconds; acked_at 0 when the call failed).
 *
 * --key-divisor D writes counter / D in place of the placeholder, so D consecutive requests (one of each of
 * D bodies) share their ids' digits: a player's click and purchase, say.
 *
 * Build: gcc -O2 -o grpc_load grpc_load.c -lnghttp2
 * Run:   grpc_load --port P --path /pkg.Service/Method --body FILE [--body FILE ...] --placeholder XXXXXXXXXXXXXXXX
 *                  [--host 127.0.0.1] [--connections 4] [--in-flight 256] [--warmup 2] [--duration 10]
 *                  [--header "name: value" ...] [--counter-start 0] [--key-divisor 1]
 *                  [--rate R --count N --times FILE]
 * Each body FILE holds one serialized protobuf message; the 5-byte gRPC prefix is added here.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODIES 16
#define MAX_HEADERS 16
#define MAX_CONNECTIONS 64
#define DRAIN_TIMEOUT_S 15.0

typedef struct {
    uint8_t *data; /* gRPC-framed: 5-byte prefix + message */
    size_t len;
    size_t offsets[64]; /* where the placeholder occurs */
    int n_offsets;
} template_t;

typedef struct connection connection_t;

typedef struct {
    connection_t *conn;
    uint8_t *body;
    size_t len, sent;
    uint64_t counter;
    double start;
    int grpc_status; /* -1 until seen */
    int http_status;
} stream_t;

struct connection {
    int fd;
    nghttp2_session *session;
    int in_flight;
    int target;
    int watching_out; /* EPOLLOUT registered */
    int dead;
};

static template_t templates[MAX_BODIES];
static int n_templates;
static const char *placeholder = NULL;
static size_t placeholder_len;
static uint64_t counter;
static nghttp2_nv request_headers[8 + MAX_HEADERS];
static size_t n_request_headers;

static double t_start, t_window_start, t_window_end;
static int submitting = 1;
static uint64_t ok_window, err_window, ok_total, err_total;
static double *latencies;
static size_t n_latencies, cap_latencies;
static char first_error[512];
/* Open-loop mode (--rate): each request's send and acknowledgement times, by counter - counter_start. */
static uint64_t counter_start;
static double *paced_due, *paced_sent, *paced_acked;
static double paced_rate;
static uint64_t key_divisor = 1;
static uint32_t peer_max_streams; /* the server's SETTINGS_MAX_CONCURRENT_STREAMS, as last seen */
static int max_in_flight_seen;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "grpc_load: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void load_template(const char *path) {
    if (n_templates == MAX_BODIES) {
        fprintf(stderr, "grpc_load: at most %d bodies\n", MAX_BODIES);
        exit(2);
    }
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    template_t *t = &templates[n_templates++];
    t->len = 5 + (size_t)size;
    t->data = malloc(t->len);
    if (fread(t->data + 5, 1, (size_t)size, f) != (size_t)size) die("read body");
    fclose(f);
    t->data[0] = 0; /* not compressed */
    uint32_t be = htonl((uint32_t)size);
    memcpy(t->data + 1, &be, 4);
    for (size_t i = 5; placeholder && i + placeholder_len <= t->len; i++) {
        if (memcmp(t->data + i, placeholder, placeholder_len) == 0 && t->n_offsets < 64) {
            t->offsets[t->n_offsets++] = i;
            i += placeholder_len - 1;
        }
    }
    if (placeholder && t->n_offsets == 0) {
        fprintf(stderr, "grpc_load: placeholder %s not found in %s\n", placeholder, path);
        exit(2);
    }
}

static void record(stream_t *s, int ok, double done) {
    int in_window = done >= t_window_start && done <= t_window_end;
    if (ok) {
        ok_total++;
        if (in_window) {
            ok_window++;
            if (n_latencies == cap_latencies) {
                cap_latencies = cap_latencies ? cap_latencies * 2 : 65536;
                latencies = realloc(latencies, cap_latencies * sizeof(double));
            }
            latencies[n_latencies++] = done - s->start;
        }
    } else {
        err_total++;
        if (in_window) err_window++;
    }
}

static ssize_t send_cb(nghttp2_session *session, const uint8_t *data, size_t length, int flags, void *user_data) {
    (void)session;
    (void)flags;
    connection_t *c = user_data;
    ssize_t n = send(c->fd, data, length, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return n;
}

static int on_header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    stream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s) return 0;
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        s->grpc_status = atoi((const char *)value);
    } else if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->http_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0 && !first_error[0]) {
        snprintf(first_error, sizeof first_error, "%.*s", (int)valuelen, value);
    }
    return 0;
}

static int on_stream_close_cb(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
    connection_t *c = user_data;
    stream_t *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s) return 0;
    int ok = error_code == 0 && s->http_status == 200 && s->grpc_status == 0;
    if (!ok && !first_error[0]) {
        snprintf(first_error, sizeof first_error, "http %d, grpc-status %d, h2 error %u", s->http_status,
                 s->grpc_status, error_code);
    }
    double done = now_s();
    record(s, ok, done);
    if (paced_acked && ok) paced_acked[s->counter - counter_start] = done;
    c->in_flight--;
    free(s->body);
    free(s);
    return 0;
}

static ssize_t body_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)session;
    (void)stream_id;
    (void)user_data;
    stream_t *s = source->ptr;
    size_t n = s->len - s->sent;
    if (n > length) n = length;
    memcpy(buf, s->body + s->sent, n);
    s->sent += n;
    if (s->sent == s->len) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void submit_one(connection_t *c) {
    template_t *t = &templates[counter % (uint64_t)n_templates];
    stream_t *s = calloc(1, sizeof *s);
    s->conn = c;
    s->len = t->len;
    s->body = malloc(t->len);
    memcpy(s->body, t->data, t->len);
    char digits[64];
    snprintf(digits, sizeof digits, "%0*" PRIu64, (int)placeholder_len, counter / key_divisor);
    for (int i = 0; i < t->n_offsets; i++) memcpy(s->body + t->offsets[i], digits, placeholder_len);
    s->counter = counter++;
    s->grpc_status = -1;
    if (paced_sent) {
        uint64_t k = s->counter - counter_start;
        paced_due[k] = t_start + (double)k / paced_rate;
        paced_sent[k] = now_s();
        s->start = paced_due[k]; /* open loop: timed from when it was due */
    } else {
        s->start = now_s();
    }
    nghttp2_data_provider provider = {.source.ptr = s, .read_callback = body_read_cb};
    int32_t id = nghttp2_submit_request(c->session, NULL, request_headers, n_request_headers, &provider, s);
    if (id < 0) {
        fprintf(stderr, "grpc_load: submit: %s\n", nghttp2_strerror(id));
        exit(2);
    }
    c->in_flight++;
    if (c->in_flight > max_in_flight_seen) max_in_flight_seen = c->in_flight;
}

static void add_header(const char *name, const char *value) {
    nghttp2_nv *nv = &request_headers[n_request_headers++];
    nv->name = (uint8_t *)strdup(name);
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)strdup(value);
    nv->valuelen = strlen(value);
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void connect_to(connection_t *c, const char *host, int port, nghttp2_session_callbacks *callbacks) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "grpc_load: --host must be an IPv4 address\n");
        exit(2);
    }
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_client_new(&c->session, callbacks, c);
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
}

static void update_epoll(int epfd, connection_t *c) {
    int want = nghttp2_session_want_write(c->session) ? 1 : 0;
    if (want == c->watching_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->watching_out = want;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double p) {
    if (!n_latencies) return 0;
    size_t i = (size_t)(p * (double)(n_latencies - 1));
    return latencies[i] * 1000.0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *path = NULL;
    int port = 0, n_connections = 4, in_flight = 256;
    double warmup = 2, duration = 10, rate = 0;
    uint64_t count = 0;
    const char *times_path = NULL;
    const char *extra_names[MAX_HEADERS], *extra_values[MAX_HEADERS];
    int n_extra = 0;
    const char *bodies[MAX_BODIES];
    int n_bodies = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) {
            fprintf(stderr, "grpc_load: %s needs a value\n", arg);
            return 2;
        }
        i++;
        if (!strcmp(arg, "--host")) host = val;
        else if (!strcmp(arg, "--port")) port = atoi(val);
        else if (!strcmp(arg, "--path")) path = val;
        else if (!strcmp(arg, "--body") && n_bodies < MAX_BODIES) bodies[n_bodies++] = val;
        else if (!strcmp(arg, "--placeholder")) placeholder = val;
        else if (!strcmp(arg, "--connections")) n_connections = atoi(val);
        else if (!strcmp(arg, "--in-flight")) in_flight = atoi(val);
        else if (!strcmp(arg, "--warmup")) warmup = atof(val);
        else if (!strcmp(arg, "--duration")) duration = atof(val);
        else if (!strcmp(arg, "--counter-start")) counter = strtoull(val, NULL, 10);
        else if (!strcmp(arg, "--key-divisor")) key_divisor = strtoull(val, NULL, 10);
        else if (!strcmp(arg, "--rate")) rate = atof(val);
        else if (!strcmp(arg, "--count")) count = strtoull(val, NULL, 10);
        else if (!strcmp(arg, "--times")) times_path = val;
        else if (!strcmp(arg, "--header") && n_extra < MAX_HEADERS) {
            const char *colon = strchr(val, ':');
            if (!colon) {
                fprintf(stderr, "grpc_load: --header takes 'name: value'\n");
                return 2;
            }
            extra_names[n_extra] = strndup(val, (size_t)(colon - val));
            extra_values[n_extra++] = colon + 1 + strspn(colon + 1, " ");
        } else {
            fprintf(stderr, "grpc_load: unknown or repeated-too-often option %s\n", arg);
            return 2;
        }
    }
    if (!port || !path || !n_bodies || n_connections < 1 || n_connections > MAX_CONNECTIONS ||
        in_flight < n_connections) {
        fprintf(stderr, "grpc_load: needs --port, --path, --body; 1..%d connections, in-flight >= connections\n",
                MAX_CONNECTIONS);
        return 2;
    }
    if (key_divisor < 1) {
        fprintf(stderr, "grpc_load: --key-divisor must be at least 1\n");
        return 2;
    }
    if ((rate > 0) != (count > 0) || (rate > 0) != (times_path != NULL)) {
        fprintf(stderr, "grpc_load: --rate, --count and --times go together\n");
        return 2;
    }
    if (rate > 0) {
        counter_start = counter;
        paced_rate = rate;
        paced_due = calloc(count, sizeof(double));
        paced_sent = calloc(count, sizeof(double));
        paced_acked = calloc(count, sizeof(double));
        /* The measured window is the whole run: every request counts. */
        warmup = 0;
        duration = (double)count / rate;
    }
    if (placeholder) placeholder_len = strlen(placeholder);
    for (int i = 0; i < n_bodies; i++) load_template(bodies[i]);

    char authority[300];
    snprintf(authority, sizeof authority, "%s:%d", host, port);
    add_header(":method", "POST");
    add_header(":scheme", "http");
    add_header(":path", path);
    add_header(":authority", authority);
    add_header("content-type", "application/grpc");
    add_header("te", "trailers");
    add_header("user-agent", "grpc-load-c/1");
    for (int i = 0; i < n_extra; i++) add_header(extra_names[i], extra_values[i]);

    nghttp2_session_callbacks *callbacks;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_send_callback(callbacks, send_cb);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close_cb);

    int epfd = epoll_create1(0);
    connection_t conns[MAX_CONNECTIONS] = {0};
    for (int i = 0; i < n_connections; i++) {
        connect_to(&conns[i], host, port, callbacks);
        /* Spread the streams evenly: the first connections take the remainder. */
        conns[i].target = in_flight / n_connections + (i < in_flight % n_connections ? 1 : 0);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }

    t_start = now_s();
    t_window_start = t_start + warmup;
    t_window_end = t_window_start + duration;
    double drain_deadline = t_window_end + DRAIN_TIMEOUT_S;
    uint8_t buf[65536];
    struct epoll_event events[MAX_CONNECTIONS];
    uint64_t paced_submitted = 0;
    for (;;) {
        double now = now_s();
        int wait_ms = 5;
        if (rate > 0) {
            /* Open loop: every request whose time has come goes out now, on its connection. */
            uint64_t due = (uint64_t)((now - t_start) * rate) + 1;
            if (due > count) due = count;
            while (paced_submitted < due) {
                connection_t *c = &conns[paced_submitted % (uint64_t)n_connections];
                if (!c->dead) submit_one(c);
                else counter++; /* its request is never sent: it stays unacknowledged */
                paced_submitted++;
            }
            submitting = paced_submitted < count;
            if (submitting) {
                double next = t_start + (double)paced_submitted / rate - now_s();
                /* Rounded up: rounded down, the last fraction of a millisecond is a busy loop. */
                wait_ms = next > 0 ? (int)(next * 1000) + 1 : 0;
            }
        } else if (submitting && now >= t_window_end) {
            submitting = 0;
        }
        int open = 0, busy = 0;
        for (int i = 0; i < n_connections; i++) {
            connection_t *c = &conns[i];
            if (c->dead) continue;
            while (rate <= 0 && submitting && c->in_flight < c->target) submit_one(c);
            int rv = nghttp2_session_send(c->session);
            if (rv != 0) {
                fprintf(stderr, "grpc_load: send: %s\n", nghttp2_strerror(rv));
                c->dead = 1;
                continue;
            }
            update_epoll(epfd, c);
            open++;
            busy += c->in_flight;
        }
        if (!open) break;
        if (!submitting && (busy == 0 || now > drain_deadline)) break;
        int n = epoll_wait(epfd, events, MAX_CONNECTIONS, wait_ms < 5 ? wait_ms : 5);
        for (int e = 0; e < n; e++) {
            connection_t *c = events[e].data.ptr;
            if (c->dead) continue;
            if (events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    ssize_t got = recv(c->fd, buf, sizeof buf, 0);
                    if (got > 0) {
                        ssize_t used = nghttp2_session_mem_recv(c->session, buf, (size_t)got);
                        if (used < 0) {
                            fprintf(stderr, "grpc_load: recv: %s\n", nghttp2_strerror((int)used));
                            c->dead = 1;
                            break;
                        }
                        continue;
                    }
                    if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                        if (!first_error[0]) snprintf(first_error, sizeof first_error, "connection closed by server");
                        err_total += (uint64_t)c->in_flight;
                        c->dead = 1;
                    }
                    break;
                }
            }
        }
    }
    if (rate > 0) {
        FILE *f = fopen(times_path, "w");
        if (!f) die(times_path);
        for (uint64_t k = 0; k < count; k++)
            fprintf(f, "%" PRIu64 " %.6f %.6f %.6f\n", counter_start + k, paced_due[k], paced_sent[k], paced_acked[k]);
        fclose(f);
    }
    double window = (now_s() < t_window_end ? now_s() : t_window_end) - t_window_start;
    if (window <= 0) window = 1e-9;
    qsort(latencies, n_latencies, sizeof(double), cmp_double);
    char escaped[1100];
    size_t j = 0;
    for (size_t i = 0; first_error[i] && j + 2 < sizeof escaped; i++) {
        char ch = first_error[i];
        if (ch == '"' || ch == '\\') escaped[j++] = '\\';
        escaped[j++] = (ch >= 32 && ch < 127) ? ch : '?';
    }
    escaped[j] = 0;
    /* A server limit below what was in flight would hold requests back in nghttp2: a closed loop in disguise. */
    peer_max_streams = nghttp2_session_get_remote_settings(conns[0].session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    printf("{\"ok\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"ok_total\": %" PRIu64 ", \"errors_total\": %" PRIu64
           ", \"seconds\": %.3f, \"per_second\": %.1f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"connections\": %d"
           ", \"in_flight\": %d, \"max_in_flight_per_connection\": %d, \"server_max_concurrent_streams\": %u"
           ", \"first_error\": \"%s\"}\n",
           ok_window, err_window, ok_total, err_total, window, (double)ok_window / window, percentile(0.5),
           percentile(0.99), n_connections, in_flight, max_in_flight_seen, peer_max_streams, escaped);
    for (int i = 0; i < n_connections; i++) {
        nghttp2_session_del(conns[i].session);
        close(conns[i].fd);
    }
    nghttp2_session_callbacks_del(callbacks);
    return 0;
}
