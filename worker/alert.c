/* worker/alert.c: the alerter thread. Each poll, under the alerts lock and in one
 * transaction, it judges the fresh alerts of every (kind, business) group against the storm
 * window, then claims a batch of due alerts with a lease:
 *
 *   fresh group --(a summary of the group in the window)--> alerts_defer() to its end
 *               --(<= threshold - sent one by one in window)--> approved, alerts_claim()
 *               --(more)--> alerts_summarize(): one summary alert, members SUMMARIZED
 *
 * After the commit it sends the batch outside any transaction: each SMS recipient and the
 * email are recorded as they succeed (alerts_set_progress), so a retry only repeats what
 * failed; then alerts_finish() marks the alert SENT or due again after a backoff. A crash
 * mid-send leaves the lease, after which another alerter repeats the unrecorded part. */
#include "worker/alert.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/url.h"
#include "store/alerts.h"
#include "store/db.h"

#define CLAIM_BATCH 20
#define SEND_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 5000
#define LEASE_EXTRA_MS 60000
#define LOCK_WAIT_S 1
#define DB_TIMEOUT_MS 5000
#define SMS_TEXT_MAX 320  /* bytes; about two SMS segments of plain text */
#define MAIL_LINE_MAX 998 /* RFC 5322 2.1.1 */
/* sms_done is a TINYINT bitmask: bit i for recipient i < 6; recipients 6.. share bit 6 and
 * are retried together. */
#define SMS_SHARED_BIT 6

struct alerter {
    const struct cfg *cfg;
    struct alerter_opts o;
    atomic_int *stop;
    metric *sms_sent, *sms_failed, *mail_sent, *mail_failed, *summarized, *pending;
    pthread_t tid;
    /* Owned by the thread. */
    db_conn *db;
    CURL *http;
    CURL *smtp;
};

/* A summary committed in this poll, logged after the commit. */
struct summary_note {
    int64_t id;
    size_t count;
    struct alerts_group group;
};

/* ------------------------------------------------------------------ text helpers */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 512;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap, again;
    int n;

    va_start(ap, fmt);
    va_copy(again, ap);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    if (n >= (int)sizeof(tmp)) {
        char *big = malloc((size_t)n + 1);
        if (big == NULL)
            abort();
        vsnprintf(big, (size_t)n + 1, fmt, again);
        sb_add(b, big, (size_t)n);
        free(big);
    } else if (n > 0) {
        sb_add(b, tmp, (size_t)n);
    }
    va_end(again);
    va_end(ap);
}

/* Appends s on one line: control characters (CR/LF above all, which would let a value start
 * a new header) become spaces. */
static void sb_line(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        char c = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
        sb_add(b, &c, 1);
    }
}

/* Cuts s (valid UTF-8) to at most max bytes without splitting a character. */
static void cut_utf8(char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max)
        return;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    s[max] = '\0';
}

static const char *or_none(const char *s)
{
    return s && s[0] ? s : "-";
}

/* ------------------------------------------------------------------ curl transfers */

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct alerter *a = arg;
    (void)dt, (void)dn, (void)ut, (void)un;
    /* Non-zero aborts the transfer: shutdown must not wait out a 10 s timeout. */
    return atomic_load(a->stop) ? 1 : 0;
}

static size_t on_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

/* Common options: every transfer is bounded and can be aborted by *stop. */
static CURLcode set_common(struct alerter *a, CURL *h, const char *url, const char *protocols,
                           char *curl_err)
{
    CURLcode c;

    curl_easy_reset(h);
    if ((c = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, protocols)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_URL, url)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)SEND_TIMEOUT_MS)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS)) !=
            CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_XFERINFODATA, a)) != CURLE_OK)
        return c;
    return CURLE_OK;
}

static void curl_failure(CURLcode c, const char *curl_err, char *err, size_t len)
{
    if (c == CURLE_ABORTED_BY_CALLBACK)
        snprintf(err, len, "aborted: the alerter is stopping");
    else
        snprintf(err, len, "%s", curl_err[0] ? curl_err : curl_easy_strerror(c));
}

/* POSTs one SMS; 0 when the gateway answered 2xx, else -1 with err. */
static int sms_post(struct alerter *a, const char *to, const char *text, char *err, size_t len)
{
    char curl_err[CURL_ERROR_SIZE] = "";
    json_object *o = json_object_new_object();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    const char *body;
    long status = 0;
    CURLcode c;
    int rc = -1;

    if (o == NULL || headers == NULL)
        abort();
    json_object_object_add(o, "to", json_object_new_string(to));
    json_object_object_add(o, "text", json_object_new_string(text));
    body =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if ((c = set_common(a, a->http, a->cfg->alerts.sms_url, "http,https", curl_err)) != CURLE_OK ||
        (c = curl_easy_setopt(a->http, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
        (c = curl_easy_setopt(a->http, CURLOPT_HTTPHEADER, headers)) != CURLE_OK ||
        (c = curl_easy_setopt(a->http, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body))) !=
            CURLE_OK ||
        (c = curl_easy_setopt(a->http, CURLOPT_POSTFIELDS, body)) != CURLE_OK ||
        (c = curl_easy_setopt(a->http, CURLOPT_WRITEFUNCTION, on_discard)) != CURLE_OK ||
        (c = curl_easy_perform(a->http)) != CURLE_OK) {
        curl_failure(c, curl_err, err, len);
        goto out;
    }
    curl_easy_getinfo(a->http, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(err, len, "HTTP %ld", status);
        goto out;
    }
    rc = 0;
out:
    /* The handle keeps pointers to these until the next reset; it is reset before reuse. */
    curl_easy_setopt(a->http, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(a->http, CURLOPT_POSTFIELDS, NULL);
    curl_slist_free_all(headers);
    json_object_put(o);
    return rc;
}

struct upload {
    const char *p;
    size_t left;
};

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct upload *u = arg;
    size_t k = size * n < u->left ? size * n : u->left;

    memcpy(buf, u->p, k);
    u->p += k;
    u->left -= k;
    return k;
}

/* The address inside "Name <addr>", or the whole string. out holds 320 bytes. */
static void envelope_address(const char *s, char *out, size_t len)
{
    const char *lt = strchr(s, '<'), *gt = lt ? strchr(lt, '>') : NULL;

    if (lt && gt)
        snprintf(out, len, "<%.*s>", (int)(gt - lt - 1), lt + 1);
    else
        snprintf(out, len, "<%s>", s);
}

static int mail_send(struct alerter *a, const char *message, char *err, size_t len)
{
    const struct cfg_alerts *ca = &a->cfg->alerts;
    char curl_err[CURL_ERROR_SIZE] = "", from[320];
    struct curl_slist *rcpt = NULL;
    struct upload u = {message, strlen(message)};
    CURLcode c;
    int rc = -1;

    for (size_t i = 0; i < ca->n_mail_to; i++) {
        char to[320];
        envelope_address(ca->mail_to[i], to, sizeof(to));
        rcpt = curl_slist_append(rcpt, to);
        if (rcpt == NULL)
            abort();
    }
    envelope_address(ca->mail_from, from, sizeof(from));
    if ((c = set_common(a, a->smtp, ca->smtp_url, "smtp,smtps", curl_err)) != CURLE_OK ||
        (c = curl_easy_setopt(a->smtp, CURLOPT_MAIL_FROM, from)) != CURLE_OK ||
        (c = curl_easy_setopt(a->smtp, CURLOPT_MAIL_RCPT, rcpt)) != CURLE_OK ||
        (c = curl_easy_setopt(a->smtp, CURLOPT_UPLOAD, 1L)) != CURLE_OK ||
        (c = curl_easy_setopt(a->smtp, CURLOPT_READFUNCTION, on_read)) != CURLE_OK ||
        (c = curl_easy_setopt(a->smtp, CURLOPT_READDATA, &u)) != CURLE_OK ||
        (c = curl_easy_setopt(a->smtp, CURLOPT_INFILESIZE_LARGE, (curl_off_t)u.left)) != CURLE_OK ||
        (c = curl_easy_perform(a->smtp)) != CURLE_OK) {
        curl_failure(c, curl_err, err, len);
        goto out;
    }
    rc = 0;
out:
    curl_easy_setopt(a->smtp, CURLOPT_MAIL_RCPT, NULL);
    curl_easy_setopt(a->smtp, CURLOPT_READDATA, NULL);
    curl_slist_free_all(rcpt);
    return rc;
}

/* ------------------------------------------------------------------ message texts */

static void sms_text(const struct alert *al, char *out, size_t len)
{
    struct sbuf b = {0};
    const char *subject = al->subject;

    /* The text starts with [paynotify] already: an SMS has no room to say it twice. */
    if (strncmp(subject, "paynotify: ", 11) == 0)
        subject += 11;
    sb_str(&b, "[paynotify] ");
    if (al->is_summary) {
        sb_line(&b, subject);
    } else {
        sb_line(&b, al->kind);
        if (al->business) {
            sb_str(&b, " business=");
            sb_line(&b, al->business);
        }
        if (al->order_id) {
            sb_str(&b, " order=");
            sb_line(&b, al->order_id);
        }
        sb_str(&b, ": ");
        sb_line(&b, subject);
    }
    snprintf(out, len, "%s", b.p);
    cut_utf8(out, len - 1 < SMS_TEXT_MAX ? len - 1 : SMS_TEXT_MAX);
    free(b.p);
}

/* RFC 2047 B encoding in words of at most 45 bytes of text (60 of base64, 72 in all). */
static void sb_header_text(struct sbuf *b, const char *s)
{
    int ascii = 1;
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            ascii = 0;
    if (ascii) {
        sb_line(b, s);
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t k = n - i < 45 ? n - i : 45;
        char enc[64];
        /* Never split a UTF-8 sequence between two words. */
        while (i + k < n && k > 0 && ((unsigned char)s[i + k] & 0xC0) == 0x80)
            k--;
        crypto_b64_encode((const unsigned char *)s + i, k, enc);
        sb_printf(b, "%s=?UTF-8?B?%s?=", i ? "\r\n " : "", enc);
        i += k;
    }
}

/* Appends text with CRLF line ends and lines cut to MAIL_LINE_MAX bytes. Leading dots are
 * left alone: libcurl dot-stuffs SMTP uploads itself. */
static void sb_mail_body(struct sbuf *b, const char *s)
{
    size_t col = 0;

    for (; *s; s++) {
        if (*s == '\r')
            continue;
        if (*s == '\n' || col == MAIL_LINE_MAX) {
            sb_add(b, "\r\n", 2);
            col = 0;
            if (*s == '\n')
                continue;
        }
        sb_add(b, s, 1);
        col++;
    }
    if (col > 0)
        sb_add(b, "\r\n", 2);
}

static char *mail_message(const struct cfg_alerts *ca, const struct alert *al)
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct sbuf b = {0};
    char queued[40], stamp[24] = "";
    const char *at = strrchr(ca->mail_from, '@');
    int64_t now = clock_now_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    size_t k = 0;

    gmtime_r(&t, &tm);
    sb_printf(&b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
              months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    sb_str(&b, "From: ");
    sb_line(&b, ca->mail_from);
    sb_str(&b, "\r\nTo: ");
    for (size_t i = 0; i < ca->n_mail_to; i++) {
        if (i)
            sb_str(&b, ", ");
        sb_line(&b, ca->mail_to[i]);
    }
    sb_str(&b, "\r\nSubject: ");
    sb_header_text(&b, al->subject);
    /* Stable across retries, so a receiving system can drop a copy sent twice. */
    for (const char *p = al->created_at; *p && k + 1 < sizeof(stamp); p++)
        if (*p >= '0' && *p <= '9')
            stamp[k++] = *p;
    stamp[k] = '\0';
    sb_printf(&b, "\r\nMessage-ID: <paynotify.alert.%lld.%s@", (long long)al->id, stamp);
    if (at != NULL) {
        for (const char *p = at + 1; *p && *p != '>'; p++)
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                *p == '.' || *p == '-')
                sb_add(&b, p, 1);
    } else {
        sb_str(&b, "paynotify.invalid");
    }
    sb_str(&b, ">\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: 8bit\r\nX-Paynotify-Alert-Kind: ");
    sb_line(&b, al->kind);
    sb_printf(&b, "\r\nX-Paynotify-Alert-Id: %lld\r\n\r\n", (long long)al->id);
    clock_sql_to_rfc3339(al->created_at, queued, sizeof(queued));
    sb_str(&b, "kind:      ");
    sb_line(&b, al->kind);
    sb_str(&b, "\r\nbusiness:  ");
    sb_line(&b, or_none(al->business));
    sb_str(&b, "\r\norder:     ");
    sb_line(&b, or_none(al->order_id));
    sb_printf(&b, "\r\nalert id:  %lld\r\nqueued at: %s\r\n\r\n", (long long)al->id, queued);
    sb_mail_body(&b, al->body);
    return b.p;
}

/* ------------------------------------------------------------------ sending */

static int sms_bit(size_t i)
{
    return 1 << (i < SMS_SHARED_BIT ? (int)i : SMS_SHARED_BIT);
}

static int sms_all(size_t n)
{
    int m = 0;

    for (size_t i = 0; i < n && i <= SMS_SHARED_BIT; i++)
        m |= sms_bit(i);
    return m;
}

static void add_error(char *err, size_t len, const char *what, const char *msg)
{
    size_t n = strlen(err);

    if (n + 3 < len)
        snprintf(err + n, len - n, "%s%s: %s", n ? "; " : "", what, msg);
}

/* Sends what is left of one claimed alert and records the outcome. */
static void send_alert(struct alerter *a, struct alert *al)
{
    const struct cfg_alerts *ca = &a->cfg->alerts;
    char err[ALERTS_ERROR_MAX + 1] = "", id[24], attempt[16], retry[16];
    struct errbuf e = {0};
    int sms = al->sms_done, mail = al->mail_done, sms_ok, mail_ok;
    int64_t retry_ms;

    snprintf(id, sizeof(id), "%lld", (long long)al->id);
    snprintf(attempt, sizeof(attempt), "%d", al->attempts);
    if (ca->sms_url != NULL && (sms & sms_all(ca->n_sms_to)) != sms_all(ca->n_sms_to)) {
        char text[SMS_TEXT_MAX + 1], what[32], msg[256];
        int failed = 0, tried = 0;
        sms_text(al, text, sizeof(text));
        for (size_t i = 0; i < ca->n_sms_to && !atomic_load(a->stop); i++) {
            if (sms & sms_bit(i))
                continue;
            tried |= sms_bit(i);
            snprintf(what, sizeof(what), "sms_to[%zu]", i);
            if (sms_post(a, ca->sms_to[i], text, msg, sizeof(msg)) == 0) {
                metric_inc(a->sms_sent);
                continue;
            }
            failed |= sms_bit(i);
            metric_inc(a->sms_failed);
            add_error(err, sizeof(err), what, msg);
            LOG_WARN("alert_send_failed", "alert_id", id, "channel", "sms", "recipient", what,
                     "attempt", attempt, "error", msg);
        }
        if ((tried & ~failed) != 0) {
            sms |= tried & ~failed;
            if (alerts_set_progress(a->db, al->id, sms, mail, &e) != 0)
                LOG_WARN("alert_record_failed", "alert_id", id, "error", e.msg);
        }
    }
    if (ca->smtp_url != NULL && !mail && !atomic_load(a->stop)) {
        char *message = mail_message(ca, al), msg[256];
        if (mail_send(a, message, msg, sizeof(msg)) == 0) {
            metric_inc(a->mail_sent);
            mail = 1;
            if (alerts_set_progress(a->db, al->id, sms, mail, &e) != 0)
                LOG_WARN("alert_record_failed", "alert_id", id, "error", e.msg);
        } else {
            metric_inc(a->mail_failed);
            add_error(err, sizeof(err), "email", msg);
            LOG_WARN("alert_send_failed", "alert_id", id, "channel", "email", "attempt", attempt,
                     "error", msg);
        }
        free(message);
    }
    sms_ok = ca->sms_url == NULL || (sms & sms_all(ca->n_sms_to)) == sms_all(ca->n_sms_to);
    mail_ok = ca->smtp_url == NULL || mail;
    if (sms_ok && mail_ok) {
        if (alerts_finish(a->db, al->id, 1, NULL, 0, &e) != 0)
            LOG_WARN("alert_record_failed", "alert_id", id, "error", e.msg);
        else
            LOG_INFO("alert_sent", "alert_id", id, "kind", al->kind, "business", al->business,
                     "order_id", al->order_id, "attempt", attempt);
        return;
    }
    /* Interrupted by shutdown: due again at once, for whichever alerter runs next. */
    retry_ms = atomic_load(a->stop) ? 0 : alerter_backoff_ms(al->attempts);
    if (err[0] == '\0')
        snprintf(err, sizeof(err), "interrupted by shutdown");
    if (retry_ms > 0)
        duration_format(retry_ms, retry, sizeof(retry));
    else
        snprintf(retry, sizeof(retry), "0s");
    if (alerts_finish(a->db, al->id, 0, err, retry_ms, &e) != 0)
        LOG_WARN("alert_record_failed", "alert_id", id, "error", e.msg);
    else
        LOG_WARN("alert_retry_scheduled", "alert_id", id, "kind", al->kind, "order_id",
                 al->order_id, "attempt", attempt, "retry_in", retry, "error", err);
}

/* ------------------------------------------------------------------ the storm policy */

static void summary_texts(const struct alerter *a, const struct alerts_group *g,
                          const struct alerts_fresh *f, struct sbuf *subject, struct sbuf *body)
{
    const char *business = g->has_business ? g->business : "-";
    char window[24], first[40], last[40];
    size_t shown = f->n_orders < 3 ? f->n_orders : 3;

    duration_format(a->o.storm_window_ms, window, sizeof(window));
    clock_sql_to_rfc3339(f->first_at, first, sizeof(first));
    clock_sql_to_rfc3339(f->last_at, last, sizeof(last));
    sb_printf(subject, "paynotify: %zu %s alerts for business %s", f->n, g->kind, business);
    if (shown > 0) {
        sb_str(subject, ", orders ");
        for (size_t i = 0; i < shown; i++)
            sb_printf(subject, "%s%s", i ? ", " : "", f->orders[i]);
        if (f->n > shown)
            sb_printf(subject, " and %zu more", f->n - shown);
    }
    sb_printf(body,
              "%zu alerts of kind %s for business %s were queued between %s and %s.\n"
              "More than %d alerts of one kind for one business within %s are sent as one "
              "summary, and the next summary for them comes no sooner than %s after this one.\n\n",
              f->n, g->kind, business, first, last, a->o.storm_threshold, window, window);
    if (f->n_orders > 0) {
        sb_printf(body, "First order ids (%zu of %zu):\n", f->n_orders, f->n);
        for (size_t i = 0; i < f->n_orders; i++)
            sb_printf(body, "  %s\n", f->orders[i]);
        sb_str(body, "\n");
    }
    if (f->first_subject != NULL)
        sb_printf(body, "First alert: %s\n\n", f->first_subject);
    sb_str(body, "Each alert stays in the alerts table with status SUMMARIZED and summary_id "
                 "set to this summary's id.\n");
}

/* Judges every group with fresh due alerts (inside the claim transaction). Appends the ids
 * that may go out one by one to *approved and the summaries made to *notes. */
static int judge_storms(struct alerter *a, int64_t **approved, size_t *n_approved,
                        struct summary_note **notes, size_t *n_notes, struct errbuf *e)
{
    struct alerts_group *groups = NULL;
    size_t n_groups = 0;
    int rc = -1;

    if (alerts_fresh_groups(a->db, &groups, &n_groups, e) != 0)
        return -1;
    for (size_t i = 0; i < n_groups; i++) {
        const struct alerts_group *g = &groups[i];
        struct alerts_fresh f;
        char last_summary[32];
        int sent_one_by_one, budget;

        if (alerts_lock_fresh(a->db, g, &f, e) != 0)
            goto out;
        if (f.n == 0 || alerts_group_history(a->db, g, a->o.storm_window_ms, &sent_one_by_one,
                                             last_summary, e) != 0) {
            int failed = f.n > 0;
            alerts_fresh_free(&f);
            if (failed)
                goto out;
            continue; /* another session holds them */
        }
        budget = a->o.storm_threshold - sent_one_by_one;
        if (last_summary[0] != '\0') {
            /* The group is in a storm: the rest waits for the window to end. */
            if (alerts_defer(a->db, f.ids, f.n, last_summary, a->o.storm_window_ms, e) != 0) {
                alerts_fresh_free(&f);
                goto out;
            }
        } else if ((int64_t)f.n <= budget) {
            *approved = realloc(*approved, (*n_approved + f.n) * sizeof(**approved));
            if (*approved == NULL)
                abort();
            memcpy(*approved + *n_approved, f.ids, f.n * sizeof(*f.ids));
            *n_approved += f.n;
        } else {
            struct sbuf subject = {0}, body = {0};
            int64_t id;
            summary_texts(a, g, &f, &subject, &body);
            id = alerts_summarize(a->db, g, f.ids, f.n, subject.p, body.p, e);
            free(subject.p);
            free(body.p);
            if (id < 0) {
                alerts_fresh_free(&f);
                goto out;
            }
            *notes = realloc(*notes, (*n_notes + 1) * sizeof(**notes));
            if (*notes == NULL)
                abort();
            (*notes)[*n_notes].id = id;
            (*notes)[*n_notes].count = f.n;
            (*notes)[*n_notes].group = *g;
            (*n_notes)++;
        }
        alerts_fresh_free(&f);
    }
    rc = 0;
out:
    free(groups);
    return rc;
}

/* ------------------------------------------------------------------ the poll */

static int64_t lease_step_ms(const struct alerter *a)
{
    const struct cfg_alerts *ca = &a->cfg->alerts;
    size_t transfers = (ca->sms_url ? ca->n_sms_to : 0) + (ca->smtp_url ? 1 : 0);

    return (int64_t)transfers * SEND_TIMEOUT_MS + 1000;
}

/* One claim and the sends it yields. Returns the number of alerts claimed, or -1. */
static int poll_once(struct alerter *a)
{
    struct errbuf e = {0};
    int64_t *approved = NULL;
    size_t n_approved = 0, n = 0, n_notes = 0;
    struct alert *batch = NULL;
    struct summary_note *notes = NULL;
    int locked, committed = 0;

    locked = alerts_lock(a->db, LOCK_WAIT_S, &e);
    if (locked <= 0) {
        if (locked < 0)
            LOG_WARN("alert_claim_failed", "error", e.msg);
        return locked;
    }
    if (db_begin(a->db, &e) != 0)
        goto out;
    if (judge_storms(a, &approved, &n_approved, &notes, &n_notes, &e) != 0 ||
        alerts_claim(a->db, approved, n_approved, CLAIM_BATCH, lease_step_ms(a), LEASE_EXTRA_MS,
                     &batch, &n, &e) != 0)
        goto out;
    committed = db_commit(a->db, &e) == 0;
out:
    /* A claim half made must not stay open: its row locks would hold every other alerter. */
    if (!committed)
        db_rollback(a->db);
    alerts_unlock(a->db);
    free(approved);
    if (!committed) {
        LOG_WARN("alert_claim_failed", "error", e.msg);
        alerts_free(batch, n);
        free(notes);
        return -1;
    }
    for (size_t i = 0; i < n_notes; i++) {
        char id[24], count[24];
        snprintf(id, sizeof(id), "%lld", (long long)notes[i].id);
        snprintf(count, sizeof(count), "%zu", notes[i].count);
        metric_add(a->summarized, (int64_t)notes[i].count);
        LOG_WARN("alerts_summarized", "summary_id", id, "kind", notes[i].group.kind, "business",
                 notes[i].group.has_business ? notes[i].group.business : NULL, "count", count);
    }
    free(notes);
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(a->stop)) {
            /* Not attempted: hand it back instead of leaving it leased. */
            if (alerts_release(a->db, batch[i].id, &e) != 0)
                LOG_WARN("alert_record_failed", "error", e.msg);
            continue;
        }
        send_alert(a, &batch[i]);
    }
    alerts_free(batch, n);
    return (int)n;
}

static void update_pending(struct alerter *a)
{
    struct errbuf e = {0};
    int64_t n = alerts_pending(a->db, &e);

    if (n >= 0)
        metric_set(a->pending, n);
}

static void nap(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *thread_main(void *arg)
{
    struct alerter *a = arg;
    const struct cfg_alerts *ca = &a->cfg->alerts;
    int channels = ca->sms_url != NULL || ca->smtp_url != NULL;
    int64_t next = 0;

    db_thread_init();
    a->http = curl_easy_init();
    a->smtp = curl_easy_init();
    if (a->http == NULL || a->smtp == NULL)
        abort();
    if (!channels)
        LOG_WARN("alerts_no_channel", "detail",
                 "alerts.sms_url and alerts.smtp_url are unset: alerts stay PENDING");
    while (!atomic_load(a->stop)) {
        struct errbuf e = {0};
        int64_t now = clock_mono_ms();
        int claimed = 0;

        if (now < next) {
            nap(next - now < 50 ? next - now : 50);
            continue;
        }
        next = now + a->o.poll_ms;
        if (a->db == NULL && (a->db = db_open(a->cfg->mysql_url, DB_TIMEOUT_MS, &e)) == NULL) {
            LOG_WARN("alert_db_failed", "error", e.msg);
            continue;
        }
        if (channels)
            claimed = poll_once(a);
        update_pending(a);
        /* A full batch means more is due: go on without waiting. */
        if (claimed == CLAIM_BATCH)
            next = now;
    }
    db_close(a->db);
    curl_easy_cleanup(a->http);
    curl_easy_cleanup(a->smtp);
    db_thread_end();
    return NULL;
}

/* ------------------------------------------------------------------ start / join */

int64_t alerter_backoff_ms(int attempts)
{
    static const int64_t steps[] = {5000, 30000, 120000, 600000, 1800000};
    size_t n = sizeof(steps) / sizeof(steps[0]);

    if (attempts < 1)
        return steps[0];
    return (size_t)attempts <= n ? steps[attempts - 1] : steps[n - 1];
}

static metric *counter(metrics *reg, const char *channel, const char *outcome)
{
    char labels[64];

    snprintf(labels, sizeof(labels), "channel=\"%s\",outcome=\"%s\"", channel, outcome);
    return metrics_counter(reg, "paynotify_worker_alerts_total",
                           "On-call alert messages by channel (one per SMS recipient or email) "
                           "and outcome.",
                           labels);
}

alerter *alerter_start(const struct cfg *cfg, metrics *reg, const struct alerter_opts *o,
                       atomic_int *stop)
{
    alerter *a = calloc(1, sizeof(*a));

    if (a == NULL)
        abort();
    a->cfg = cfg;
    a->stop = stop;
    if (o != NULL)
        a->o = *o;
    if (a->o.poll_ms <= 0)
        a->o.poll_ms = 1000;
    if (a->o.storm_window_ms <= 0)
        a->o.storm_window_ms = 300000;
    if (a->o.storm_threshold <= 0)
        a->o.storm_threshold = 3;
    if (reg != NULL) {
        a->sms_sent = counter(reg, "sms", "sent");
        a->sms_failed = counter(reg, "sms", "failed");
        a->mail_sent = counter(reg, "email", "sent");
        a->mail_failed = counter(reg, "email", "failed");
        a->summarized =
            metrics_counter(reg, "paynotify_worker_alerts_summarized_total",
                            "Alerts folded into a storm summary instead of sent one by one.", NULL);
        a->pending = metrics_gauge(reg, "paynotify_worker_alerts_pending",
                                   "Alerts waiting to be sent (status PENDING).", NULL);
    }
    if (pthread_create(&a->tid, NULL, thread_main, a) != 0) {
        free(a);
        return NULL;
    }
    return a;
}

void alerter_join(alerter *a)
{
    if (a == NULL)
        return;
    pthread_join(a->tid, NULL);
    free(a);
}
