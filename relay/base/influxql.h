/*
 * influxql: tell a read from a write in an InfluxQL query string, without
 * parsing InfluxQL. The query pass-through needs exactly this: a read may
 * go to one backend, a statement that changes state may not (it would
 * reach one InfluxDB and not the others). docs/influxdb.md, "Queries",
 * lists the statements and what relayd does with each class.
 *
 * The scanner knows InfluxQL's lexical rules, enough to find where a
 * statement ends and which words are keywords: white space, `-- line`
 * and block comments, 'strings' and "quoted identifiers" with backslash
 * escapes, $parameters, and /regular expressions/ (a '/' starts one after
 * `=~`, `!~`, `,`, `(`, FROM or at a statement's start; after a name, a
 * number or `)` it is a division). Keywords are case-insensitive and never
 * quoted. Where the scanner is in doubt it errs towards "changes state":
 * an unquoted INTO anywhere in a SELECT makes it SELECT ... INTO, an
 * unknown first word makes the statement IQL_INVALID. No I/O, no
 * allocation.
 */
#ifndef RELAY_INFLUXQL_H
#define RELAY_INFLUXQL_H

#include <stddef.h>

/* Ordered by how much care a statement needs: the class of a query is
 * the highest class among its statements. */
enum iql_class {
	IQL_EMPTY = 0,    /* no statement: only white space, comments or ';' */
	IQL_READ,         /* SELECT without INTO, SHOW, EXPLAIN of a read */
	IQL_REPLICATE,    /* CREATE DATABASE, CREATE RETENTION POLICY: idempotent, goes to every backend */
	IQL_WRITE,        /* any other statement that changes state: DROP, DELETE, ALTER, GRANT,
	                     REVOKE, SET PASSWORD, KILL QUERY, CREATE USER / CONTINUOUS QUERY /
	                     SUBSCRIPTION, SELECT ... INTO */
	IQL_INVALID,      /* not InfluxQL as far as the scanner can tell */
};

#define IQL_VERB_MAX 40

/* One statement of a query. */
struct iql_stmt {
	size_t off, len;             /* its bytes in the query, without the ';' */
	enum iql_class cls;
	char verb[IQL_VERB_MAX];     /* upper case, for messages: "SELECT", "SELECT INTO",
	                                "SHOW", "CREATE DATABASE", "DROP SERIES", ... */
};

/*
 * Split q[0..n) into statements and classify each. Fills out[0..max) with
 * the first max statements and sets *count to how many there are (more
 * than max when out was too small; the class returned covers them all).
 * Empty statements (between two ';') are skipped. Returns the class of
 * the whole query: IQL_INVALID when a string, identifier, comment or
 * regular expression is not closed, or when a statement's first word is
 * not one InfluxQL starts a statement with; err[0..errlen) then says what
 * and where (byte offset). out may be NULL when max is 0; err may be NULL.
 */
enum iql_class iql_split(const char *q, size_t n, struct iql_stmt *out, size_t max, size_t *count, char *err,
                         size_t errlen);

/* "empty", "read", "replicate", "write", "invalid". */
const char *iql_class_name(enum iql_class c);

#endif
