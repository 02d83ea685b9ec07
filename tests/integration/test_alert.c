/* tests/integration/test_alert.c: store/alerts and worker/alert against a real MariaDB
 * (PAYNOTIFY_MYSQL_URL, in a database of its own made for this run and dropped after), the
 * real SMS sink (tests/fakes/sms_sink.py, HTTP) and the real SMTP sink (tests/fakes/
 * smtp_sink.py, aiosmtpd) on free loopback ports. Checks what arrives at the sinks, not only
 * what the table says: one SMS per number and one email per alert, deduplication, retry of
 * only the failed channel or recipient, storm summaries and their window, two alerters at
 * once, SMTP down then up, and enqueue inside a caller's transaction. Every process it starts
 * is stopped, also when a check fails (atexit; the fakes also get SIGTERM if we die). */
#include "common/cfg.h"
#include "common/crypto.h"
#include "common/errbuf.h"
#include "common/metrics.h"
#include "store/alerts.h"
#include "store/db.h"
#include "store/migrate.h"
#include "tests/unit/check.h"
#include "tests/integration/testdb.h"
#include "worker/alert.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 200
#define MAX_FAKES 16

static char db_url[512];
static char db_name[64];
static char fakes_dir[1024];
static char work_dir[256];
static db_conn *db; /* the test's own connection */
static pid_t fakes[MAX_FAKES];

/* ------------------------------------------------------------------ processes */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    CHECK(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void stop_fake(pid_t pid)
{
    int status;
    int64_t deadline = mono_ms() + 10000;

    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (mono_ms() > deadline) {
            fprintf(stderr, "fake %d ignored SIGTERM; killing it\n", (int)pid);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(20);
    }
    for (int i = 0; i < MAX_FAKES; i++)
        if (fakes[i] == pid)
            fakes[i] = 0;
}

static void stop_all_fakes(void)
{
    for (int i = 0; i < MAX_FAKES; i++)
        stop_fake(fakes[i]);
}

/* Starts tests/fakes/<script> PORT ARG [EXTRA...] and waits for its "ready" line. */
static pid_t start_fake(const char *script, int port, const char *arg, const char *extra1,
                        const char *extra2)
{
    /* Debian's interpreter has python3-aiosmtpd; another python3 on PATH may not. */
    const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    char path[1200], port_s[16], line[64];
    int fds[2], slot = -1;
    size_t n = 0;
    pid_t pid;
    int64_t deadline = mono_ms() + 20000;

    for (int i = 0; i < MAX_FAKES && slot < 0; i++)
        if (fakes[i] == 0)
            slot = i;
    CHECK(slot >= 0);
    snprintf(path, sizeof(path), "%s/%s", fakes_dir, script);
    snprintf(port_s, sizeof(port_s), "%d", port);
    CHECK(pipe(fds) == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The fake must not outlive a test that crashed. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execlp(py, py, path, port_s, arg, extra1, extra2, (char *)NULL);
        _exit(127);
    }
    fakes[slot] = pid;
    close(fds[1]);
    while (n + 1 < sizeof(line)) {
        struct pollfd p = {fds[0], POLLIN, 0};
        int left = (int)(deadline - mono_ms());
        char c;
        if (left <= 0 || poll(&p, 1, left) <= 0 || read(fds[0], &c, 1) != 1)
            break;
        if (c == '\n')
            break;
        line[n++] = c;
    }
    line[n] = '\0';
    close(fds[0]);
    if (strcmp(line, "ready") != 0) {
        fprintf(stderr, "%s did not start (first line \"%s\")\n", script, line);
        exit(1);
    }
    return pid;
}

/* ------------------------------------------------------------------ sinks */

struct sinks {
    int sms_port, smtp_port;
    pid_t sms, smtp;
    char sms_file[300], mail_dir[300];
};

static void sinks_start(struct sinks *s, const char *name, const char *fail_first, int with_smtp)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->sms_file, sizeof(s->sms_file), "%s/%s-sms.jsonl", work_dir, name);
    snprintf(s->mail_dir, sizeof(s->mail_dir), "%s/%s-mail", work_dir, name);
    CHECK(mkdir(s->mail_dir, 0700) == 0);
    s->sms_port = free_port();
    s->smtp_port = free_port();
    s->sms = fail_first
                 ? start_fake("sms_sink.py", s->sms_port, s->sms_file, "--fail-first", fail_first)
                 : start_fake("sms_sink.py", s->sms_port, s->sms_file, NULL, NULL);
    if (with_smtp)
        s->smtp = start_fake("smtp_sink.py", s->smtp_port, s->mail_dir, NULL, NULL);
}

static void sinks_stop(struct sinks *s)
{
    stop_fake(s->sms);
    stop_fake(s->smtp);
    s->sms = s->smtp = 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* SMS messages received whose text contains needle and whose "to" is to_want (NULL: any). */
static int sms_count(const struct sinks *s, const char *needle, const char *to_want)
{
    char *all = slurp(s->sms_file), *save = NULL;
    int n = 0;

    if (all == NULL)
        return 0;
    for (char *line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_object *o = json_tokener_parse(line), *to, *text;
        CHECK(o != NULL);
        CHECK(json_object_object_get_ex(o, "to", &to));
        CHECK(json_object_object_get_ex(o, "text", &text));
        if ((needle == NULL || strstr(json_object_get_string(text), needle) != NULL) &&
            (to_want == NULL || strcmp(json_object_get_string(to), to_want) == 0))
            n++;
        json_object_put(o);
    }
    free(all);
    return n;
}

/* Emails received containing needle (NULL: all); the text of the first such in *first
 * (caller frees) when first is not NULL. */
static int mail_count(const struct sinks *s, const char *needle, char **first)
{
    DIR *d = opendir(s->mail_dir);
    struct dirent *de;
    int n = 0;

    if (first)
        *first = NULL;
    CHECK(d != NULL);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char path[600], *text;
        if (strncmp(de->d_name, "msg-", 4) != 0 || len < 5 ||
            strcmp(de->d_name + len - 4, ".eml") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", s->mail_dir, de->d_name);
        text = slurp(path);
        CHECK(text != NULL);
        if (needle == NULL || strstr(text, needle) != NULL) {
            n++;
            if (first && *first == NULL) {
                *first = text;
                text = NULL;
            }
        }
        free(text);
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ database */

static int64_t q_int(const char *sql)
{
    struct errbuf e = {0};
    db_rows *r = db_queryf(db, &e, "%r", sql);
    int64_t v;

    if (r == NULL) {
        fprintf(stderr, "query failed: %s: %s\n", sql, e.msg);
        exit(1);
    }
    CHECK(db_rows_next(r));
    v = db_rows_int(r, 0);
    db_rows_free(r);
    return v;
}

/* The first column of the first row as a string ("" for NULL); caller frees. */
static char *q_str(const char *sql)
{
    struct errbuf e = {0};
    db_rows *r = db_queryf(db, &e, "%r", sql);
    char *v;

    if (r == NULL) {
        fprintf(stderr, "query failed: %s: %s\n", sql, e.msg);
        exit(1);
    }
    CHECK(db_rows_next(r));
    v = strdup(db_rows_get(r, 0) ? db_rows_get(r, 0) : "");
    db_rows_free(r);
    return v;
}

static void exec_sql(const char *sql)
{
    struct errbuf e = {0};

    if (db_execf(db, &e, "%r", sql) < 0) {
        fprintf(stderr, "statement failed: %s: %s\n", sql, e.msg);
        exit(1);
    }
}

/* Waits until the query yields want; fails the test after timeout_ms. */
static void wait_int(const char *sql, int64_t want, int64_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms, got = 0;

    while (mono_ms() < deadline) {
        got = q_int(sql);
        if (got == want)
            return;
        sleep_ms(50);
    }
    fprintf(stderr, "timed out after %lld ms: %s gave %lld, want %lld\n", (long long)timeout_ms,
            sql, (long long)got, (long long)want);
    exit(1);
}

static int enqueue(const char *kind, const char *key, const char *business, const char *order,
                   const char *subject, const char *body)
{
    struct errbuf e = {0};
    int rc;

    CHECK_INT_EQ(db_begin(db, &e), 0);
    rc = alerts_enqueue(db, kind, key, business, order, subject, body, &e);
    if (rc < 0) {
        fprintf(stderr, "alerts_enqueue(%s): %s\n", key, e.msg);
        exit(1);
    }
    CHECK_INT_EQ(db_commit(db, &e), 0);
    return rc;
}

static void make_database(const char *base_url)
{
    int applied = 0;

    db = testdb_create(base_url, "alert", db_name, db_url, &applied);
    CHECK(applied >= 2);
}

static void drop_database(void)
{
    struct errbuf e = {0};

    CHECK(db_execf(db, &e, "DROP DATABASE `%r`", db_name) >= 0);
    db_close(db);
    db = NULL;
}

/* ------------------------------------------------------------------ the alerter */

static const char *const NUMBERS[] = {"+8613800000001", "+8613800000002"};
static const char *const MAILBOXES[] = {"oncall@example.com", "ops@example.com"};

static char **strv(const char *const *v, size_t n)
{
    char **out = calloc(n, sizeof(*out));

    CHECK(out != NULL);
    for (size_t i = 0; i < n; i++)
        out[i] = strdup(v[i]);
    return out;
}

/* smtp_port 0 = no email channel; sms_port 0 = no SMS channel. */
static struct cfg *make_cfg(int sms_port, int smtp_port)
{
    struct cfg *c = calloc(1, sizeof(*c));
    char url[128];

    CHECK(c != NULL);
    c->mysql_url = strdup(db_url);
    if (sms_port) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/sms", sms_port);
        c->alerts.sms_url = strdup(url);
        c->alerts.sms_to = strv(NUMBERS, 2);
        c->alerts.n_sms_to = 2;
    }
    if (smtp_port) {
        snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", smtp_port);
        c->alerts.smtp_url = strdup(url);
        c->alerts.mail_from = strdup("paynotify@example.com");
        c->alerts.mail_to = strv(MAILBOXES, 2);
        c->alerts.n_mail_to = 2;
    }
    return c;
}

struct running {
    struct cfg *cfg;
    metrics *reg;
    atomic_int stop;
    alerter *a;
};

static void run_start(struct running *r, struct cfg *cfg, int64_t window_ms)
{
    struct alerter_opts o = {POLL_MS, window_ms, 3};

    r->cfg = cfg;
    r->reg = metrics_new();
    atomic_init(&r->stop, 0);
    r->a = alerter_start(cfg, r->reg, &o, &r->stop);
    CHECK(r->a != NULL);
}

static int64_t run_join(struct running *r)
{
    int64_t t0 = mono_ms();

    atomic_store(&r->stop, 1);
    alerter_join(r->a);
    r->a = NULL;
    return mono_ms() - t0;
}

static void run_free(struct running *r)
{
    metrics_free(r->reg);
    cfg_free(r->cfg);
}

static int64_t counter(struct running *r, const char *channel, const char *outcome)
{
    char labels[64];

    snprintf(labels, sizeof(labels), "channel=\"%s\",outcome=\"%s\"", channel, outcome);
    return metric_value(metrics_counter(r->reg, "paynotify_worker_alerts_total", "x", labels));
}

static void reset_table(void)
{
    exec_sql("DELETE FROM alerts");
}

/* ------------------------------------------------------------------ tests */

/* Enqueue runs inside the caller's transaction: a rollback leaves nothing behind, a second
 * enqueue of a key is reported as such, and input the columns cannot hold is refused or
 * cut rather than failing the caller's transaction. */
static void test_enqueue(void)
{
    struct errbuf e = {0};
    char long_id[80], long_subject[400];

    reset_table();
    CHECK_INT_EQ(db_begin(db, &e), 0);
    CHECK_INT_EQ(
        alerts_enqueue(db, "amount_mismatch", "amount_mismatch:o-rb", "shop", "o-rb", "s", "b", &e),
        0);
    db_rollback(db);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts"), 0);

    CHECK_INT_EQ(db_begin(db, &e), 0);
    CHECK_INT_EQ(alerts_enqueue(db, "amount_mismatch", "amount_mismatch:o-1", "shop", "o-1",
                                "subject", "body", &e),
                 0);
    CHECK_INT_EQ(alerts_enqueue(db, "amount_mismatch", "amount_mismatch:o-1", "shop", "o-1",
                                "subject again", "body again", &e),
                 1);
    CHECK_INT_EQ(db_commit(db, &e), 0);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE dedup_key = 'amount_mismatch:o-1' AND "
                       "subject = 'subject' AND status = 'PENDING' AND attempts = 0"),
                 1);
    /* Once committed, the key keeps deduplicating in later transactions. */
    CHECK_INT_EQ(enqueue("amount_mismatch", "amount_mismatch:o-1", "shop", "o-1", "s", "b"), 1);

    memset(long_id, 'x', 70);
    long_id[70] = '\0';
    CHECK_INT_EQ(alerts_enqueue(db, "k", "k:long", "shop", long_id, "s", "b", &e), -1);
    CHECK(strstr(e.msg, "order_id") != NULL);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    CHECK_INT_EQ(alerts_enqueue(db, "k", "summary:1", "shop", "o", "s", "b", &e), -1);
    CHECK(strstr(e.msg, "reserved") != NULL);
    CHECK_INT_EQ(alerts_enqueue(db, "", "k:empty", "shop", "o", "s", "b", &e), -1);

    /* Bytes that are not UTF-8 become '?'; an over-long subject is cut to the column. */
    memset(long_subject, 's', 399);
    long_subject[399] = '\0';
    CHECK_INT_EQ(enqueue("unknown_order", "unknown_order:bad", NULL, "o-\xff\xfe-1", long_subject,
                         "body \xc3\x28 end"),
                 0);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE dedup_key = 'unknown_order:bad' AND "
                       "order_id = 'o-?"
                       "?-1' AND business IS NULL AND CHAR_LENGTH(subject) = 256 "
                       "AND subject LIKE '%...' AND body = 'body ?( end'"),
                 1);
    reset_table();
    TEST_PASS();
}

static void check_mail_subject(const char *mail, const char *want)
{
    /* One RFC 2047 word per line: "=?UTF-8?B?<b64>?=", folded with CRLF + space. */
    const char *p = strstr(mail, "\r\nSubject: ");
    char got[512] = "";
    size_t n = 0;

    CHECK(p != NULL);
    p += 11;
    while (strncmp(p, "=?UTF-8?B?", 10) == 0) {
        const char *end = strstr(p + 10, "?=");
        unsigned char *dec = NULL;
        size_t dlen = 0;
        CHECK(end != NULL);
        CHECK_INT_EQ(crypto_b64_decode(p + 10, (size_t)(end - p - 10), &dec, &dlen), 0);
        CHECK(n + dlen < sizeof(got));
        memcpy(got + n, dec, dlen);
        n += dlen;
        free(dec);
        p = end + 2;
        if (strncmp(p, "\r\n ", 3) == 0)
            p += 3;
    }
    got[n] = '\0';
    CHECK_STR_EQ(got, want);
    CHECK(strncmp(p, "\r\n", 2) == 0);
}

/* One alert: exactly one SMS per number and one email naming the order; the same key again
 * is not sent again. */
static void test_one_alert(void)
{
    struct sinks s;
    struct running r;
    const char *subject =
        "paynotify: webhook for order ord-basic-1 failed after 6 attempts (\xc3\xa9t\xc3\xa9)";
    char *mail = NULL;

    reset_table();
    sinks_start(&s, "one", NULL, 1);
    run_start(&r, make_cfg(s.sms_port, s.smtp_port), 300000);
    CHECK_INT_EQ(enqueue("notify_failed", "notify_failed:wh_basic", "shop-basic", "ord-basic-1",
                         subject,
                         "A business webhook could not be delivered after all retries.\n\n"
                         "order:      ord-basic-1\nlast error: HTTP 503\n.leading dot line\n"),
                 0);
    CHECK_INT_EQ(enqueue("notify_failed", "notify_failed:wh_basic", "shop-basic", "ord-basic-1",
                         subject, "again"),
                 1);
    wait_int("SELECT COUNT(*) FROM alerts WHERE status = 'SENT' AND sent_at IS NOT NULL", 1, 15000);
    sleep_ms(3 * POLL_MS);
    CHECK_INT_EQ(enqueue("notify_failed", "notify_failed:wh_basic", "shop-basic", "ord-basic-1",
                         subject, "after it was sent"),
                 1);
    sleep_ms(3 * POLL_MS);

    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 2);
    CHECK_INT_EQ(sms_count(&s, "ord-basic-1", NUMBERS[0]), 1);
    CHECK_INT_EQ(sms_count(&s, "ord-basic-1", NUMBERS[1]), 1);
    CHECK_INT_EQ(sms_count(&s, "notify_failed business=shop-basic order=ord-basic-1", NULL), 2);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 1);
    CHECK_INT_EQ(mail_count(&s, "ord-basic-1", &mail), 1);
    CHECK(strstr(mail, "MAIL FROM: paynotify@example.com\r\n") != NULL);
    CHECK(strstr(mail, "RCPT TO: oncall@example.com\r\nRCPT TO: ops@example.com\r\n") != NULL);
    CHECK(strstr(mail, "\r\n\r\nDate: ") != NULL);
    CHECK(strstr(mail, "\r\nFrom: paynotify@example.com\r\n") != NULL);
    CHECK(strstr(mail, "\r\nTo: oncall@example.com, ops@example.com\r\n") != NULL);
    CHECK(strstr(mail, "\r\nMessage-ID: <paynotify.alert.") != NULL);
    CHECK(strstr(mail, "@example.com>\r\n") != NULL);
    CHECK(strstr(mail, "Content-Type: text/plain; charset=utf-8\r\n") != NULL);
    CHECK(strstr(mail, "\r\nbusiness:  shop-basic\r\norder:     ord-basic-1\r\n") != NULL);
    CHECK(strstr(mail, "\r\nlast error: HTTP 503\r\n.leading dot line\r\n") != NULL);
    check_mail_subject(mail, subject);
    free(mail);

    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts"), 1);
    CHECK_INT_EQ(q_int("SELECT sms_done * 10 + mail_done FROM alerts"), 31);
    CHECK_INT_EQ(q_int("SELECT attempts FROM alerts"), 1);
    CHECK_INT_EQ(q_int("SELECT last_error IS NULL FROM alerts"), 1);
    CHECK_INT_EQ(counter(&r, "sms", "sent"), 2);
    CHECK_INT_EQ(counter(&r, "email", "sent"), 1);
    CHECK_INT_EQ(counter(&r, "sms", "failed") + counter(&r, "email", "failed"), 0);
    CHECK_INT_EQ(metric_value(metrics_gauge(r.reg, "paynotify_worker_alerts_pending", "x", NULL)),
                 0);
    CHECK(run_join(&r) < 3000);
    run_free(&r);
    sinks_stop(&s);
    TEST_PASS();
}

/* The SMS gateway fails at first: the alert is retried after the backoff, only for what
 * failed; the email went out on the first attempt and is not sent again. */
static void test_sms_retry(const char *fail_first, int64_t sms_done_after_first)
{
    struct sinks s;
    struct running r;
    char *err;
    int64_t wait_ms;

    reset_table();
    sinks_start(&s, fail_first[0] == '2' ? "retry2" : "retry1", fail_first, 1);
    run_start(&r, make_cfg(s.sms_port, s.smtp_port), 300000);
    CHECK_INT_EQ(enqueue("duplicate_payment", "duplicate_payment:ord-retry", "shop-retry",
                         "ord-retry", "second payment pi_2 for a paid order", "refund issued"),
                 0);
    wait_int("SELECT attempts FROM alerts", 1, 10000);
    wait_int("SELECT mail_done FROM alerts", 1, 10000);
    wait_int("SELECT last_error IS NOT NULL FROM alerts", 1, 10000);
    CHECK_INT_EQ(q_int("SELECT status = 'PENDING' FROM alerts"), 1);
    CHECK_INT_EQ(q_int("SELECT sms_done FROM alerts"), sms_done_after_first);
    err = q_str("SELECT last_error FROM alerts");
    CHECK(strstr(err, "sms_to[0]: HTTP 503") != NULL);
    free(err);
    /* Backoff after the first failure: 5 s. */
    wait_ms =
        q_int("SELECT TIMESTAMPDIFF(MICROSECOND, NOW(3), next_attempt_at) / 1000 FROM alerts");
    CHECK(wait_ms > 3500 && wait_ms <= 5000);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 1);

    wait_int("SELECT status = 'SENT' FROM alerts", 1, 12000);
    sleep_ms(3 * POLL_MS);
    CHECK_INT_EQ(q_int("SELECT attempts FROM alerts"), 2);
    CHECK_INT_EQ(sms_count(&s, "ord-retry", NUMBERS[0]), 1);
    CHECK_INT_EQ(sms_count(&s, "ord-retry", NUMBERS[1]), 1);
    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 2);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 1);
    CHECK_INT_EQ(counter(&r, "sms", "failed"), fail_first[0] - '0');
    CHECK_INT_EQ(counter(&r, "sms", "sent"), 2);
    CHECK_INT_EQ(counter(&r, "email", "sent"), 1);
    run_join(&r);
    run_free(&r);
    sinks_stop(&s);
    TEST_PASS();
}

static void enqueue_many(const char *business, const char *prefix, int from, int n)
{
    struct errbuf e = {0};

    /* All in one transaction: they become visible to the alerter at once. */
    CHECK_INT_EQ(db_begin(db, &e), 0);
    for (int i = from; i < from + n; i++) {
        char key[96], order[64], subject[128];
        snprintf(order, sizeof(order), "%s-%04d", prefix, i);
        snprintf(key, sizeof(key), "notify_failed:%s", order);
        snprintf(subject, sizeof(subject), "paynotify: webhook for order %s failed", order);
        CHECK_INT_EQ(alerts_enqueue(db, "notify_failed", key, business, order, subject,
                                    "webhook failed", &e),
                     0);
    }
    CHECK_INT_EQ(db_commit(db, &e), 0);
}

/* 50 alerts of one kind for one business at once become one summary naming 50 and the
 * first order ids, while another business's 3 (the threshold) go out one by one; alerts
 * arriving during the window wait for its end and then become the next summary. */
static void test_storm(void)
{
    struct sinks s;
    struct running r;
    const int64_t window = 4000;
    char *mail = NULL, sql[256];
    int64_t first_summary;

    reset_table();
    sinks_start(&s, "storm", NULL, 1);
    run_start(&r, make_cfg(s.sms_port, s.smtp_port), window);
    enqueue_many("shop-storm", "storm", 1, 50);
    enqueue_many("shop-calm", "calm", 1, 3);
    wait_int("SELECT COUNT(*) FROM alerts WHERE status = 'SENT'", 4, 20000);
    sleep_ms(3 * POLL_MS);

    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE dedup_key LIKE 'summary:%'"), 1);
    first_summary = q_int("SELECT id FROM alerts WHERE dedup_key LIKE 'summary:%'");
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM alerts WHERE status = 'SUMMARIZED' AND summary_id = %lld AND "
             "business = 'shop-storm' AND attempts = 0",
             (long long)first_summary);
    CHECK_INT_EQ(q_int(sql), 50);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE business = 'shop-calm' AND "
                       "status = 'SENT' AND summary_id IS NULL"),
                 3);
    /* Messages: the summary and the three calm alerts, each by 2 SMS and 1 email. */
    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 8);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 4);
    CHECK_INT_EQ(sms_count(&s,
                           "50 notify_failed alerts for business shop-storm, orders "
                           "storm-0001, storm-0002, storm-0003 and 47 more",
                           NULL),
                 2);
    CHECK_INT_EQ(sms_count(&s, "storm-0004", NULL), 0);
    CHECK_INT_EQ(sms_count(&s, "business=shop-calm order=calm-000", NULL), 6);
    CHECK_INT_EQ(mail_count(&s, "50 alerts of kind notify_failed for business shop-storm", &mail),
                 1);
    CHECK(strstr(mail, "First order ids (10 of 50):\r\n  storm-0001\r\n") != NULL);
    CHECK(strstr(mail, "  storm-0010\r\n\r\n") != NULL);
    CHECK(strstr(mail, "storm-0011") == NULL);
    CHECK(strstr(mail, "\r\norder:     -\r\n") != NULL);
    free(mail);
    CHECK_INT_EQ(
        metric_value(metrics_counter(r.reg, "paynotify_worker_alerts_summarized_total", "x", NULL)),
        50);

    /* Within the window: 5 more wait for its end (no message now), then go as one summary. */
    enqueue_many("shop-storm", "late", 1, 5);
    sleep_ms(1000);
    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 8);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 4);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM alerts WHERE order_id LIKE 'late-%%' AND status = 'PENDING' "
             "AND attempts = 0 AND next_attempt_at = (SELECT created_at + INTERVAL %lld "
             "MICROSECOND FROM alerts WHERE id = %lld)",
             (long long)window * 1000, (long long)first_summary);
    CHECK_INT_EQ(q_int(sql), 5);
    CHECK_INT_EQ(metric_value(metrics_gauge(r.reg, "paynotify_worker_alerts_pending", "x", NULL)),
                 5);
    wait_int("SELECT COUNT(*) FROM alerts WHERE dedup_key LIKE 'summary:%' AND status = 'SENT'", 2,
             window + 5000);
    sleep_ms(3 * POLL_MS);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE order_id LIKE 'late-%' AND "
                       "status = 'SUMMARIZED'"),
                 5);
    CHECK_INT_EQ(sms_count(&s,
                           "5 notify_failed alerts for business shop-storm, orders late-0001, "
                           "late-0002, late-0003 and 2 more",
                           NULL),
                 2);
    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 10);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 5);
    CHECK_INT_EQ(
        metric_value(metrics_counter(r.reg, "paynotify_worker_alerts_summarized_total", "x", NULL)),
        55);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE status = 'PENDING'"), 0);
    run_join(&r);
    run_free(&r);
    sinks_stop(&s);
    TEST_PASS();
}

/* Two claim transactions at once get disjoint rows and the second does not wait for the
 * first: FOR UPDATE SKIP LOCKED, without the alerters' named lock. */
static void test_claim_skip_locked(void)
{
    struct errbuf e = {0};
    db_conn *other = db_open(db_url, 5000, &e);
    struct alert *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int64_t t0;

    CHECK(other != NULL);
    reset_table();
    enqueue_many("shop-skip", "skip", 1, 6);
    /* Mark them judged (attempted once before), so that alerts_claim takes them. */
    exec_sql("UPDATE alerts SET attempts = 1");
    CHECK_INT_EQ(db_begin(db, &e), 0);
    CHECK_INT_EQ(alerts_claim(db, NULL, 0, 4, 10000, 0, &a, &na, &e), 0);
    CHECK_INT_EQ(na, 4);
    CHECK_INT_EQ(db_begin(other, &e), 0);
    t0 = mono_ms();
    CHECK_INT_EQ(alerts_claim(other, NULL, 0, 10, 10000, 0, &b, &nb, &e), 0);
    CHECK(mono_ms() - t0 < 1000);
    CHECK_INT_EQ(nb, 2);
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            CHECK(a[i].id != b[j].id);
    CHECK_INT_EQ(a[0].attempts, 2);
    CHECK_INT_EQ(db_commit(other, &e), 0);
    CHECK_INT_EQ(db_commit(db, &e), 0);
    /* Leased: nothing is due any more. */
    CHECK_INT_EQ(db_begin(db, &e), 0);
    alerts_free(a, na);
    CHECK_INT_EQ(alerts_claim(db, NULL, 0, 10, 10000, 0, &a, &na, &e), 0);
    CHECK_INT_EQ(na, 0);
    CHECK_INT_EQ(db_commit(db, &e), 0);
    alerts_free(a, na);
    alerts_free(b, nb);
    db_close(other);
    reset_table();
    TEST_PASS();
}

/* Two alerters on one database: each alert is sent exactly once, and both took part. */
static void test_two_alerters(void)
{
    struct sinks s;
    struct running r1, r2;
    char order[32], business[32];

    reset_table();
    sinks_start(&s, "two", NULL, 1);
    run_start(&r1, make_cfg(s.sms_port, s.smtp_port), 300000);
    run_start(&r2, make_cfg(s.sms_port, s.smtp_port), 300000);
    /* 10 businesses with 3 alerts each: at the threshold, so every alert goes out alone. */
    for (int b = 0; b < 10; b++) {
        snprintf(business, sizeof(business), "shop-two-%d", b);
        snprintf(order, sizeof(order), "two%d", b);
        enqueue_many(business, order, 1, 3);
    }
    wait_int("SELECT COUNT(*) FROM alerts WHERE status = 'SENT'", 30, 30000);
    sleep_ms(3 * POLL_MS);
    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 60);
    CHECK_INT_EQ(mail_count(&s, NULL, NULL), 30);
    for (int b = 0; b < 10; b++)
        for (int i = 1; i <= 3; i++) {
            char needle[48];
            snprintf(needle, sizeof(needle), "order=two%d-%04d:", b, i);
            CHECK_INT_EQ(sms_count(&s, needle, NUMBERS[0]), 1);
            CHECK_INT_EQ(sms_count(&s, needle, NUMBERS[1]), 1);
            snprintf(needle, sizeof(needle), "order:     two%d-%04d\r\n", b, i);
            CHECK_INT_EQ(mail_count(&s, needle, NULL), 1);
        }
    CHECK_INT_EQ(q_int("SELECT MAX(attempts) FROM alerts"), 1);
    CHECK_INT_EQ(counter(&r1, "email", "sent") + counter(&r2, "email", "sent"), 30);
    fprintf(stderr, "two alerters: %lld and %lld emails\n",
            (long long)counter(&r1, "email", "sent"), (long long)counter(&r2, "email", "sent"));
    CHECK(counter(&r1, "email", "sent") > 0);
    CHECK(counter(&r2, "email", "sent") > 0);
    run_join(&r1);
    run_join(&r2);
    run_free(&r1);
    run_free(&r2);
    sinks_stop(&s);
    TEST_PASS();
}

/* SMTP server down: the alert stays PENDING with the error; once a server listens on the
 * port, the next attempt sends the email, and the SMS is not sent twice. */
static void test_smtp_down(void)
{
    struct sinks s;
    struct running r;
    char *err;

    reset_table();
    sinks_start(&s, "smtpdown", NULL, 0);
    run_start(&r, make_cfg(s.sms_port, s.smtp_port), 300000);
    CHECK_INT_EQ(enqueue("paid_after_close", "paid_after_close:ord-down", "shop-down", "ord-down",
                         "payment after close", "refunded"),
                 0);
    wait_int("SELECT last_error IS NOT NULL FROM alerts", 1, 15000);
    CHECK_INT_EQ(q_int("SELECT status = 'PENDING' FROM alerts"), 1);
    CHECK_INT_EQ(q_int("SELECT sms_done * 10 + mail_done FROM alerts"), 30);
    err = q_str("SELECT last_error FROM alerts");
    CHECK(strstr(err, "email: ") != NULL);
    fprintf(stderr, "last_error with SMTP down: %s\n", err);
    free(err);
    CHECK_INT_EQ(counter(&r, "email", "failed"), 1);
    CHECK_INT_EQ(metric_value(metrics_gauge(r.reg, "paynotify_worker_alerts_pending", "x", NULL)),
                 1);
    s.smtp = start_fake("smtp_sink.py", s.smtp_port, s.mail_dir, NULL, NULL);
    wait_int("SELECT status = 'SENT' FROM alerts", 1, 15000);
    sleep_ms(3 * POLL_MS);
    CHECK_INT_EQ(mail_count(&s, "ord-down", NULL), 1);
    CHECK_INT_EQ(sms_count(&s, NULL, NULL), 2);
    CHECK_INT_EQ(q_int("SELECT attempts FROM alerts"), 2);
    CHECK_INT_EQ(counter(&r, "email", "sent"), 1);
    run_join(&r);
    run_free(&r);
    sinks_stop(&s);
    TEST_PASS();
}

/* Shutdown while a transfer hangs (a gateway that accepts and never answers): the alerter
 * aborts it instead of waiting out the 10 s timeout, and the alert is due again at once. */
static void test_stop_mid_send(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    struct running r;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int64_t took;
    char *err;

    CHECK(fd >= 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    CHECK(listen(fd, 8) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
    reset_table();
    run_start(&r, make_cfg(ntohs(addr.sin_port), 0), 300000);
    CHECK_INT_EQ(enqueue("amount_mismatch", "amount_mismatch:ord-hang", "shop-hang", "ord-hang",
                         "paid 1.00, expected 10.00", "b"),
                 0);
    wait_int("SELECT attempts FROM alerts", 1, 5000);
    sleep_ms(700); /* the POST is in flight: connected, unanswered */
    took = run_join(&r);
    fprintf(stderr, "stop with a transfer in flight took %lld ms\n", (long long)took);
    CHECK(took < 2500);
    CHECK_INT_EQ(q_int("SELECT status = 'PENDING' AND sms_done = 0 AND attempts = 1 AND "
                       "next_attempt_at <= NOW(3) FROM alerts"),
                 1);
    err = q_str("SELECT last_error FROM alerts");
    CHECK_STR_EQ(err, "sms_to[0]: aborted: the alerter is stopping");
    free(err);
    CHECK_INT_EQ(counter(&r, "sms", "failed"), 1);
    run_free(&r);
    close(fd);
    reset_table();
    TEST_PASS();
}

/* No channel configured: nothing is claimed, alerts stay PENDING (never dropped). */
static void test_no_channel(void)
{
    struct running r;

    reset_table();
    run_start(&r, make_cfg(0, 0), 300000);
    CHECK_INT_EQ(enqueue("unknown_order", "unknown_order:nochan", "shop", "o-nochan", "s", "b"), 0);
    sleep_ms(4 * POLL_MS);
    CHECK_INT_EQ(q_int("SELECT COUNT(*) FROM alerts WHERE status = 'PENDING' AND attempts = 0"), 1);
    CHECK_INT_EQ(metric_value(metrics_gauge(r.reg, "paynotify_worker_alerts_pending", "x", NULL)),
                 1);
    run_join(&r);
    run_free(&r);
    reset_table();
    TEST_PASS();
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    const char *url = getenv("PAYNOTIFY_MYSQL_URL"), *src = getenv("PAYNOTIFY_SOURCE_DIR");

    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "test_alert: PAYNOTIFY_MYSQL_URL is not set; run it through scripts/test "
                        "(or source a stack.env from scripts/lib/stack.sh)\n");
        return 1;
    }
    snprintf(fakes_dir, sizeof(fakes_dir), "%s/tests/fakes", src && src[0] ? src : ".");
    snprintf(work_dir, sizeof(work_dir), "%s/paynotify-test-alert.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(work_dir) != NULL);
    fprintf(stderr, "test_alert: sink files in %s\n", work_dir);
    atexit(stop_all_fakes);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    db_library_init();
    make_database(url);

    test_enqueue();
    test_claim_skip_locked();
    test_no_channel();
    test_one_alert();
    test_sms_retry("2", 0); /* both numbers fail once */
    test_sms_retry("1", 2); /* only the first fails: the second (bit 1) is not sent again */
    test_smtp_down();
    test_storm();
    test_two_alerters();
    test_stop_mid_send();

    drop_database();
    db_library_end();
    curl_global_cleanup();
    /* Kept when a check failed (exit before this point), for the sink files. */
    CHECK(nftw(work_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    fprintf(stderr, "test_alert: all passed\n");
    return 0;
}
