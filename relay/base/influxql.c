/*
 * influxql: a scanner for InfluxQL's tokens and a table of the words a
 * statement starts with. The rules it follows and why are in influxql.h
 * and docs/influxdb.md, "Queries".
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "relay/base/influxql.h"

enum tok {
	T_EOF,
	T_IDENT,    /* a name or a keyword, unquoted */
	T_QIDENT,   /* "a quoted identifier": never a keyword */
	T_STRING,   /* 'a string' */
	T_NUMBER,   /* 12, 1.5, 10s, 1h30m */
	T_REGEX,    /* /a regular expression/ */
	T_PARAM,    /* $name */
	T_SEMI,
	T_LPAREN,
	T_RPAREN,
	T_COMMA,
	T_MATCH,    /* =~ or !~ */
	T_OP,       /* any other operator or punctuation */
	T_ERR,
};

struct scan {
	const char *q;
	size_t n, i;
	size_t start, end;     /* the last token's bytes */
	enum tok prev;         /* the token before it, T_SEMI at a statement's start */
	int prev_from;         /* ... and it was the keyword FROM */
	const char *err;       /* what is wrong, for T_ERR */
	size_t err_at;
};

static int is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_ident_char(unsigned char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

static int tok_is(const struct scan *s, const char *kw)
{
	size_t len = strlen(kw);
	return s->end - s->start == len && strncasecmp(s->q + s->start, kw, len) == 0;
}

static enum tok fail(struct scan *s, const char *what, size_t at)
{
	s->err = what;
	s->err_at = at;
	return T_ERR;
}

/* Skip to the byte after the closing quote, honouring backslash escapes. */
static int skip_quoted(struct scan *s, char quote)
{
	while (s->i < s->n) {
		char c = s->q[s->i++];
		if (c == '\\' && s->i < s->n)
			s->i++;
		else if (c == quote)
			return 0;
	}
	return -1;
}

/* A '/' starts a regular expression only where a value is expected after
 * a match operator or in a FROM list; after a name, a number or ')' it
 * divides. */
static int regex_allowed(const struct scan *s)
{
	return s->prev == T_MATCH || s->prev == T_COMMA || s->prev == T_LPAREN || s->prev == T_SEMI ||
	       (s->prev == T_IDENT && s->prev_from);
}

/* Skip white space and comments. Returns 0, or -1 for a block comment
 * that is not closed. */
static int skip_space(struct scan *s)
{
	for (;;) {
		while (s->i < s->n && strchr(" \t\r\n\f\v", s->q[s->i]) && s->q[s->i])
			s->i++;
		if (s->i + 1 < s->n && s->q[s->i] == '-' && s->q[s->i + 1] == '-') {
			while (s->i < s->n && s->q[s->i] != '\n')
				s->i++;
		} else if (s->i + 1 < s->n && s->q[s->i] == '/' && s->q[s->i + 1] == '*') {
			const char *q = s->q;
			size_t j = s->i + 2;
			while (j + 1 < s->n && !(q[j] == '*' && q[j + 1] == '/'))
				j++;
			if (j + 1 >= s->n)
				return -1;
			s->i = j + 2;
		} else {
			return 0;
		}
	}
}

static enum tok next(struct scan *s)
{
	size_t at = s->i;
	if (skip_space(s))
		return fail(s, "comment not closed", at);
	s->start = s->i;
	if (s->i >= s->n) {
		s->end = s->i;
		return T_EOF;
	}
	unsigned char c = (unsigned char)s->q[s->i++];
	enum tok t;
	if (c == '\0') {
		/* InfluxDB's scanner stops at it; relayd must not read past what
		 * the backend would see as the end */
		return fail(s, "NUL byte", s->start);
	} else if (c == ';') {
		t = T_SEMI;
	} else if (c == '"' || c == '\'') {
		if (skip_quoted(s, (char)c))
			return fail(s, c == '"' ? "quoted identifier not closed" : "string not closed", s->start);
		t = c == '"' ? T_QIDENT : T_STRING;
	} else if (c == '/' && regex_allowed(s)) {
		if (skip_quoted(s, '/'))
			return fail(s, "regular expression not closed", s->start);
		t = T_REGEX;
	} else if (c == '$') {
		if (s->i < s->n && s->q[s->i] == '"') {
			s->i++;
			if (skip_quoted(s, '"'))
				return fail(s, "quoted parameter not closed", s->start);
		} else {
			while (s->i < s->n && is_ident_char((unsigned char)s->q[s->i]))
				s->i++;
		}
		t = T_PARAM;
	} else if ((c >= '0' && c <= '9') || (c == '.' && s->i < s->n && s->q[s->i] >= '0' && s->q[s->i] <= '9')) {
		/* digits, a fraction, an exponent, duration units: one token */
		while (s->i < s->n && (is_ident_char((unsigned char)s->q[s->i]) || s->q[s->i] == '.'))
			s->i++;
		t = T_NUMBER;
	} else if (is_ident_start(c)) {
		while (s->i < s->n && is_ident_char((unsigned char)s->q[s->i]))
			s->i++;
		t = T_IDENT;
	} else if ((c == '=' || c == '!') && s->i < s->n && s->q[s->i] == '~') {
		s->i++;
		t = T_MATCH;
	} else if (c == '(') {
		t = T_LPAREN;
	} else if (c == ')') {
		t = T_RPAREN;
	} else if (c == ',') {
		t = T_COMMA;
	} else {
		t = T_OP;
	}
	s->end = s->i;
	return t;
}

/* The words a statement starts with, and what each makes of it. A word
 * that takes a second one (CREATE DATABASE) lists it; "" matches any. */
static const struct {
	const char *first, *second;
	enum iql_class cls;
} starts[] = {
	{ "SHOW", "", IQL_READ },
	{ "CREATE", "DATABASE", IQL_REPLICATE },
	{ "CREATE", "RETENTION", IQL_REPLICATE },
	{ "CREATE", "USER", IQL_WRITE },
	{ "CREATE", "CONTINUOUS", IQL_WRITE },
	{ "CREATE", "SUBSCRIPTION", IQL_WRITE },
	{ "DROP", "", IQL_WRITE },
	{ "DELETE", "", IQL_WRITE },
	{ "ALTER", "", IQL_WRITE },
	{ "GRANT", "", IQL_WRITE },
	{ "REVOKE", "", IQL_WRITE },
	{ "SET", "", IQL_WRITE },
	{ "KILL", "", IQL_WRITE },
};

/* What one statement is so far, built token by token. */
struct stmt_state {
	size_t ntok;          /* tokens seen */
	size_t off, end;
	char w[3][16];        /* its first three tokens when they are names, upper case ("" otherwise) */
	int into;             /* an unquoted INTO was seen */
};

static void stmt_token(struct stmt_state *st, const struct scan *s, enum tok t)
{
	if (st->ntok == 0)
		st->off = s->start;
	st->end = s->end;
	if (st->ntok < 3 && t == T_IDENT && s->end - s->start < sizeof(st->w[0])) {
		size_t len = s->end - s->start;
		for (size_t k = 0; k < len; k++) {
			char c = s->q[s->start + k];
			st->w[st->ntok][k] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
		}
		st->w[st->ntok][len] = '\0';
	}
	if (t == T_IDENT && tok_is(s, "INTO"))
		st->into = 1;
	st->ntok++;
}

static enum iql_class stmt_class(const struct stmt_state *st, char *verb)
{
	const char *first = st->w[0];
	size_t k = 0;
	/* EXPLAIN [ANALYZE] SELECT ...: what the SELECT is */
	if (strcmp(first, "EXPLAIN") == 0) {
		k = strcmp(st->w[1], "ANALYZE") == 0 ? 2 : 1;
		if (strcmp(st->w[k], "SELECT") != 0) {
			snprintf(verb, IQL_VERB_MAX, "EXPLAIN");
			return IQL_INVALID;
		}
	}
	if (strcmp(st->w[k], "SELECT") == 0) {
		snprintf(verb, IQL_VERB_MAX, "%s%s", k ? "EXPLAIN " : "", st->into ? "SELECT INTO" : "SELECT");
		return st->into ? IQL_WRITE : IQL_READ;
	}
	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		if (strcmp(first, starts[i].first) != 0)
			continue;
		if (starts[i].second[0] && strcmp(st->w[1], starts[i].second) != 0)
			continue;
		if (strcmp(starts[i].second, "RETENTION") == 0)
			snprintf(verb, IQL_VERB_MAX, "%s RETENTION POLICY", first);
		else if (st->w[1][0])
			snprintf(verb, IQL_VERB_MAX, "%s %s", first, st->w[1]);
		else
			snprintf(verb, IQL_VERB_MAX, "%s", first);
		return starts[i].cls;
	}
	snprintf(verb, IQL_VERB_MAX, "%s", first[0] ? first : "?");
	return IQL_INVALID;
}

enum iql_class iql_split(const char *q, size_t n, struct iql_stmt *out, size_t max, size_t *count, char *err,
                         size_t errlen)
{
	struct scan s = { .q = q, .n = n, .prev = T_SEMI };
	struct stmt_state st = { 0 };
	enum iql_class all = IQL_EMPTY;
	size_t nstmt = 0;
	if (err && errlen)
		err[0] = '\0';
	for (;;) {
		enum tok t = next(&s);
		if (t == T_ERR) {
			if (err && errlen)
				snprintf(err, errlen, "%s at byte %zu", s.err, s.err_at);
			all = IQL_INVALID;
			break;
		}
		if (t == T_SEMI || t == T_EOF) {
			if (st.ntok) {
				char verb[IQL_VERB_MAX];
				enum iql_class c = stmt_class(&st, verb);
				if (c == IQL_INVALID && err && errlen && !err[0])
					snprintf(err, errlen, "statement %zu at byte %zu does not start as InfluxQL does",
					         nstmt + 1, st.off);
				if (nstmt < max) {
					out[nstmt].off = st.off;
					out[nstmt].len = st.end - st.off;
					out[nstmt].cls = c;
					memcpy(out[nstmt].verb, verb, sizeof(verb));
				}
				nstmt++;
				if (c > all)
					all = c;
			}
			if (t == T_EOF)
				break;
			memset(&st, 0, sizeof(st));
		} else {
			stmt_token(&st, &s, t);
		}
		s.prev = t;
		s.prev_from = t == T_IDENT && tok_is(&s, "FROM");
	}
	if (count)
		*count = nstmt;
	return all;
}

const char *iql_class_name(enum iql_class c)
{
	switch (c) {
	case IQL_EMPTY: return "empty";
	case IQL_READ: return "read";
	case IQL_REPLICATE: return "replicate";
	case IQL_WRITE: return "write";
	case IQL_INVALID: return "invalid";
	}
	return "?";
}
