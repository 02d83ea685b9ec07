/* store/migrate.h: applies migrations/NNNN_name.sql in order, once each, recorded in
 * schema_migrations. Safe to run twice and from two processes at once (GET_LOCK). */
#ifndef PAYNOTIFY_STORE_MIGRATE_H
#define PAYNOTIFY_STORE_MIGRATE_H

#include "common/errbuf.h"
#include "store/db.h"

/* Applies what is missing from dir (borrowed). *applied gets how many were applied now.
 * report(arg, version, name) is called for each one applied (may be NULL). */
int migrate_run(db_conn *db, const char *dir, int *applied,
                void (*report)(void *arg, int version, const char *name), void *arg,
                struct errbuf *e);
/* Highest applied version (0 when none), or -1. */
int migrate_current(db_conn *db, struct errbuf *e);

#endif
