/* store/db.h: one MariaDB/MySQL connection (MySQL Connector/C API). One per thread.
 * Queries are built with db_*f formats that escape every value:
 *   %s  string value, quoted and escaped; a NULL pointer becomes SQL NULL
 *   %d  int, %lld long long, %r  raw trusted SQL text (identifiers from code only)
 * A lost connection is sticky: the next call outside a transaction reconnects. */
#ifndef PAYNOTIFY_STORE_DB_H
#define PAYNOTIFY_STORE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"

#define DB_DUPLICATE (-2) /* unique key violation (ER_DUP_ENTRY) */

typedef struct db_conn db_conn;
typedef struct db_rows db_rows;

/* Call once in main() before threads start, and db_library_end() at exit. */
void db_library_init(void);
void db_library_end(void);
/* Call in each thread that uses a connection, before its first db_open(). */
void db_thread_init(void);
void db_thread_end(void);

/* url "mysql://user:pass@host:port/db" (borrowed, copied). NULL + *e on failure; free with
 * db_close(). */
db_conn *db_open(const char *url, int timeout_ms, struct errbuf *e);
void db_close(db_conn *c); /* NULL-safe */
int db_ping(db_conn *c, struct errbuf *e);

/* Affected rows (>= 0), DB_DUPLICATE, or -1. */
int64_t db_execf(db_conn *c, struct errbuf *e, const char *fmt, ...);
/* Result rows; caller frees with db_rows_free(). NULL + *e on error. */
db_rows *db_queryf(db_conn *c, struct errbuf *e, const char *fmt, ...);
/* 1 when positioned on a row, 0 at the end. */
int db_rows_next(db_rows *r);
/* Borrowed until the next db_rows_next()/db_rows_free(); NULL for SQL NULL. */
const char *db_rows_get(db_rows *r, unsigned col);
int64_t db_rows_int(db_rows *r, unsigned col); /* 0 for NULL */
uint64_t db_rows_count(db_rows *r);
void db_rows_free(db_rows *r);

int db_begin(db_conn *c, struct errbuf *e);
int db_commit(db_conn *c, struct errbuf *e);
void db_rollback(db_conn *c); /* never fails: a broken connection is dropped instead */

/* A batch: several statements sent in ONE round trip and run in order; the first one that
 * fails stops the rest. Built with db_batch_addf() (same formats as db_execf); with
 * begin = 1 a START TRANSACTION runs first and the connection is in a transaction afterwards
 * (even when a later statement failed: end it with db_commit() or db_rollback()). The batch
 * owns the result sets it returns; free everything with db_batch_free(). */
typedef struct db_batch db_batch;
#define DB_BATCH_MAX 16
db_batch *db_batch_new(db_conn *c, int begin);
void db_batch_addf(db_batch *b, const char *fmt, ...); /* aborts beyond DB_BATCH_MAX */
int db_batch_count(const db_batch *b);
/* 0 when every statement ran; DB_DUPLICATE or -1 (with *e) when one failed, and
 * db_batch_failed_at() then names it (0-based, in the order added). */
int db_batch_run(db_batch *b, struct errbuf *e);
int db_batch_failed_at(const db_batch *b);
int64_t db_batch_affected(const db_batch *b, int i);  /* rows changed by statement i */
int64_t db_batch_insert_id(const db_batch *b, int i); /* AUTO_INCREMENT id it generated */
db_rows *db_batch_rows(db_batch *b, int i);           /* its result set, NULL if none; owned by b */
void db_batch_free(db_batch *b);                      /* NULL-safe */

/* Runs a script of several ;-separated statements (migrations). */
int db_exec_script(db_conn *c, const char *sql, struct errbuf *e);

#endif
