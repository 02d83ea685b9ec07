/* bench/sink.c: bench-sink, the business webhook endpoint of scripts/bench (libuv +
 * http-parser + OpenSSL). It answers every POST with 200 at once over keep-alive, or with
 * --hang never answers (the connection stays open until the client gives up), so that one
 * process stands for a healthy or a hanging business endpoint.
 *
 * For each request it records "<arrival CLOCK_MONOTONIC ns> <data.order_id> <sig>" where sig
 * is 1 when the Standard Webhooks signature verifies with --secret (HMAC-SHA256 over
 * "id.timestamp.body", checked independently of the product's signer), 0 when it does not,
 * and - when no secret was given. Lines are flushed to --out every 100 ms, so the driver can
 * count arrivals while the run goes on. Prints "ready <port>" once listening; SIGTERM or
 * SIGINT flushes and exits 0 with a JSON summary on stdout. */
#include <http_parser.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define SINK_MAX_BODY 65536
#define SINK_FIELD_MAX 64
#define SINK_VALUE_MAX 512

struct sink;

struct sink_conn {
    struct sink *s;
    uv_tcp_t tcp;
    http_parser parser;
    char rbuf[16384];
    char field[SINK_FIELD_MAX];
    size_t field_len;
    int last_was_value;
    char *value_dst; /* where the current header's value goes, NULL to skip it */
    size_t *value_len;
    char wh_id[SINK_VALUE_MAX], wh_ts[SINK_VALUE_MAX], wh_sig[SINK_VALUE_MAX];
    size_t wh_id_len, wh_ts_len, wh_sig_len;
    char *body;
    size_t body_len;
    int closing;
};

struct sink {
    uv_loop_t *loop;
    uv_tcp_t server;
    uv_timer_t flush;
    uv_signal_t sigterm, sigint;
    http_parser_settings settings;
    FILE *out;
    int hang;
    unsigned char key[128];
    int key_len; /* -1: no secret, signatures not checked */
    long requests, bad_signatures;
};

static void die(const char *what)
{
    fprintf(stderr, "bench-sink: %s\n", what);
    exit(2);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct sink_conn *c = h->data;
    free(c->body);
    free(c);
}

static void conn_close(struct sink_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void append(char *dst, size_t *len, size_t cap, const char *at, size_t n)
{
    if (*len + n >= cap)
        n = *len < cap - 1 ? cap - 1 - *len : 0;
    memcpy(dst + *len, at, n);
    *len += n;
    dst[*len] = '\0';
}

static int on_message_begin(http_parser *p)
{
    struct sink_conn *c = p->data;
    c->field_len = c->wh_id_len = c->wh_ts_len = c->wh_sig_len = c->body_len = 0;
    c->wh_id[0] = c->wh_ts[0] = c->wh_sig[0] = '\0';
    c->last_was_value = 0;
    c->value_dst = NULL;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct sink_conn *c = p->data;
    if (c->last_was_value) {
        c->field_len = 0;
        c->last_was_value = 0;
    }
    append(c->field, &c->field_len, sizeof(c->field), at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct sink_conn *c = p->data;
    if (!c->last_was_value) {
        c->last_was_value = 1;
        c->value_dst = NULL;
        if (strcasecmp(c->field, "webhook-id") == 0) {
            c->value_dst = c->wh_id;
            c->value_len = &c->wh_id_len;
        } else if (strcasecmp(c->field, "webhook-timestamp") == 0) {
            c->value_dst = c->wh_ts;
            c->value_len = &c->wh_ts_len;
        } else if (strcasecmp(c->field, "webhook-signature") == 0) {
            c->value_dst = c->wh_sig;
            c->value_len = &c->wh_sig_len;
        }
    }
    if (c->value_dst != NULL)
        append(c->value_dst, c->value_len, SINK_VALUE_MAX, at, n);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct sink_conn *c = p->data;
    if (c->body_len + n > SINK_MAX_BODY)
        return 1;
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

/* 1 when one of the space-separated "v1,<base64>" entries matches. */
static int signature_ok(struct sink *s, struct sink_conn *c)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    char expect[128];
    size_t n = c->wh_id_len + 1 + c->wh_ts_len + 1 + c->body_len, elen;
    char *msg = malloc(n + 1);
    int ok = 0;

    if (msg == NULL)
        die("out of memory");
    snprintf(msg, n + 1, "%s.%s.", c->wh_id, c->wh_ts);
    memcpy(msg + c->wh_id_len + 1 + c->wh_ts_len + 1, c->body, c->body_len);
    HMAC(EVP_sha256(), s->key, s->key_len, (const unsigned char *)msg, n, mac, &mac_len);
    free(msg);
    memcpy(expect, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)expect + 3, mac, (int)mac_len);
    elen = strlen(expect);
    for (char *tok = c->wh_sig; *tok;) {
        size_t k = strcspn(tok, " ");
        if (k == elen && memcmp(tok, expect, k) == 0)
            ok = 1;
        tok += k;
        tok += strspn(tok, " ");
    }
    return ok;
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void on_shutdown(uv_shutdown_t *sd, int status)
{
    (void)status;
    free(sd);
}

static int on_message_complete(http_parser *p)
{
    struct sink_conn *c = p->data;
    struct sink *s = c->s;
    uint64_t t = uv_hrtime();
    char order_id[64] = "-";
    const char *k;
    const char *sig = "-";

    c->body[c->body_len] = '\0';
    /* "order_id" : "..." with any blanks around the colon. */
    k = strstr(c->body, "\"order_id\"");
    if (k != NULL) {
        size_t n;
        k += strlen("\"order_id\"");
        k += strspn(k, " \t\r\n");
        if (*k == ':') {
            k++;
            k += strspn(k, " \t\r\n");
        }
        if (*k == '"') {
            k++;
            n = strcspn(k, "\"");
            if (n >= sizeof(order_id))
                n = sizeof(order_id) - 1;
            if (n > 0) {
                memcpy(order_id, k, n);
                order_id[n] = '\0';
            }
        }
    }
    if (s->key_len >= 0) {
        int ok = signature_ok(s, c);
        sig = ok ? "1" : "0";
        if (!ok)
            s->bad_signatures++;
    }
    s->requests++;
    fprintf(s->out, "%" PRIu64 " %s %s\n", t, order_id, sig);
    if (!s->hang) {
        static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                    "Content-Length: 2\r\n\r\nok";
        uv_write_t *w = malloc(sizeof(*w));
        uv_buf_t b = uv_buf_init((char *)reply, sizeof(reply) - 1);
        if (w == NULL)
            die("out of memory");
        if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
            free(w);
        if (!http_should_keep_alive(p)) {
            uv_shutdown_t *sd = malloc(sizeof(*sd));
            if (sd == NULL)
                die("out of memory");
            if (uv_shutdown(sd, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
                free(sd);
        }
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct sink_conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct sink_conn *c = st->data;
    size_t used;

    if (n == 0)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    used = http_parser_execute(&c->parser, &c->s->settings, b->base, (size_t)n);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)n)
        conn_close(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct sink *s = server->data;
    struct sink_conn *c;

    if (status != 0)
        return;
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->body = malloc(SINK_MAX_BODY + 1)) == NULL)
        die("out of memory");
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_flush(uv_timer_t *t)
{
    struct sink *s = t->data;
    fflush(s->out);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    if (h->type == UV_TCP && h->data != NULL && h->data != arg) {
        conn_close(h->data);
        return;
    }
    uv_close(h, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct sink *s = h->data;
    (void)signum;
    fflush(s->out);
    /* Every connection's data is its sink_conn; the server's is the sink. */
    uv_walk(s->loop, close_any, s);
}

int main(int argc, char **argv)
{
    struct sink s;
    const char *listen = "127.0.0.1:0", *out = NULL, *secret = NULL;
    char host[64];
    int port, namelen;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;

    memset(&s, 0, sizeof(s));
    s.key_len = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--hang") == 0) {
            s.hang = 1;
            continue;
        }
        if (i + 1 >= argc)
            die("usage: bench-sink --out FILE [--listen HOST:PORT] [--secret whsec_...] [--hang]");
        if (strcmp(argv[i], "--listen") == 0)
            listen = argv[++i];
        else if (strcmp(argv[i], "--out") == 0)
            out = argv[++i];
        else if (strcmp(argv[i], "--secret") == 0)
            secret = argv[++i];
        else
            die("unknown argument");
    }
    if (out == NULL)
        die("--out is required");
    if (secret != NULL) {
        const char *b64 = strncmp(secret, "whsec_", 6) == 0 ? secret + 6 : secret;
        size_t n = strlen(b64);
        int k;
        if (n > 160)
            die("secret too long");
        k = EVP_DecodeBlock(s.key, (const unsigned char *)b64, (int)n);
        if (k < 0)
            die("secret is not base64");
        /* EVP_DecodeBlock counts the padding as zero bytes. */
        while (n > 0 && b64[n - 1] == '=') {
            k--;
            n--;
        }
        s.key_len = k;
    }
    s.out = fopen(out, "w");
    if (s.out == NULL)
        die("cannot open --out");
    if (sscanf(listen, "%63[^:]:%d", host, &port) != 2 || uv_ip4_addr(host, port, &addr) != 0)
        die("bad --listen (want IPv4:port)");
    signal(SIGPIPE, SIG_IGN);
    s.loop = uv_default_loop();
    s.settings.on_message_begin = on_message_begin;
    s.settings.on_header_field = on_header_field;
    s.settings.on_header_value = on_header_value;
    s.settings.on_body = on_body;
    s.settings.on_message_complete = on_message_complete;
    uv_tcp_init(s.loop, &s.server);
    s.server.data = &s;
    if (uv_tcp_bind(&s.server, (const struct sockaddr *)&addr, 0) != 0 ||
        uv_listen((uv_stream_t *)&s.server, 1024, on_connection) != 0)
        die("cannot listen");
    namelen = sizeof(bound);
    uv_tcp_getsockname(&s.server, (struct sockaddr *)&bound, &namelen);
    uv_timer_init(s.loop, &s.flush);
    s.flush.data = &s;
    uv_timer_start(&s.flush, on_flush, 100, 100);
    uv_signal_init(s.loop, &s.sigterm);
    uv_signal_init(s.loop, &s.sigint);
    s.sigterm.data = s.sigint.data = &s;
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    printf("ready %d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
    fflush(stdout);
    uv_run(s.loop, UV_RUN_DEFAULT);
    fclose(s.out);
    printf("{\"requests\":%ld,\"bad_signatures\":%ld}\n", s.requests, s.bad_signatures);
    uv_loop_close(s.loop);
    return 0;
}
