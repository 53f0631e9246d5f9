/*
 * config_internal: what the files of the configuration loader share. Not
 * for use outside relay/base/config*.c; callers include config.h.
 *
 *   config.c         the YAML walk and loading (config_load, config_release)
 *   config_keys.c    the table of keys and the rules between one item's keys
 *   config_value.c   messages, and checking and storing one value
 *   config_derived.c comparisons and figures derived from a loaded config
 */
#ifndef RELAY_CONFIG_INTERNAL_H
#define RELAY_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "relay/base/config.h"
#include "relay/base/util.h"

#define MIB (1024ULL * 1024)

/*---- the key table ----*/

enum key_type {
	KT_SECTION,   /* a mapping holding the rows whose section is this name */
	KT_LIST,      /* a sequence of mappings, described by .list */
	KT_STRING,    /* char *, not empty */
	KT_LOG_LEVEL, /* char *, one of log_levels[] */
	KT_LOG_OUTPUT, /* char *: stderr, syslog, journal or an absolute path, or a sequence of them joined by '\n' */
	KT_HOSTPORT,  /* char * as written, plus off_host (char *), off_port (uint16_t) */
	KT_URL,       /* char * as written, plus off_host, off_port and off_path (char *) */
	KT_NAME,      /* char *, a name: [A-Za-z0-9_.-]{1,64} */
	KT_SIZE,      /* uint64_t bytes, parse_size */
	KT_DURATION,  /* uint64_t milliseconds, parse_duration_ms */
	KT_SECONDS,   /* uint64_t whole seconds, written as a duration */
	KT_UINT32,    /* uint32_t, a plain decimal integer */
	KT_ENUM,      /* int (or an int-sized enum): one of the words of .enm */
	KT_PRECISION, /* int (enum lp_precision): ns, u, ms, s, m, h as on /write */
	KT_NAMES,     /* char *: a sequence of names ([A-Za-z0-9_.-]{1,64}), stored joined by ',' */
};

#define KF_REQUIRED 0x1 /* a mapping without it is refused */
#define KF_ZERO_OK  0x2 /* 0 ("none", "derived") is accepted besides [min, max] */
#define KF_INHERIT  0x4 /* backend key: unset means the relay_config field at off_inherit */
#define KF_UNIQUE   0x8 /* list item key: no two items of the list may share the value */
#define KF_SECRET   0x10 /* a password or token: never repeated in a message */
#define KF_OFF_OK   0x20 /* KT_HOSTPORT: "off" means none (every field NULL or 0) */
#define KF_PATH     0x40 /* KT_STRING: a file or directory; relative means the config file's directory */
#define KF_TEXT     0x80 /* KT_SIZE, KT_DURATION: the value as written is kept too, at off_text (char *) */

struct loader;
struct key_spec;

/* The words a KT_ENUM key takes and the values they stand for. */
struct enum_word {
	const char *name;
	int value;
};
struct enum_spec {
	const struct enum_word *words;
	size_t n;
	const char *hint; /* for messages: "true or false" */
};

/* A sequence of mappings (backends, listen.udp, auth.users ...): an array
 * of elem_size items in struct relay_config, each filled from keys. */
struct list_spec {
	int index;                  /* LIST_*: which seen-array of the loader */
	const struct key_spec *keys;
	size_t nkeys;
	size_t elem_size;
	size_t off_items, off_count; /* the array pointer and its size_t count in relay_config */
	size_t min, max;            /* items */
	const char *noun;           /* one item, for messages: "backend" */
	const char *needs;          /* its required keys, for messages: "'name' and 'url'" */
	/* Rules between the keys of one item, once it is complete; NULL = none. */
	int (*check)(struct loader *ld, const yaml_node_t *item, void *elem, const char *path);
};

struct key_spec {
	const char *section; /* "" for the top level, else the KT_SECTION row's name */
	const char *name;
	enum key_type type;
	unsigned flags;      /* KF_* */
	size_t off;          /* the field the value goes to */
	size_t off_host, off_port, off_path; /* the parsed parts of KT_HOSTPORT, KT_URL */
	size_t off_inherit;  /* KF_INHERIT: the struct relay_config field to copy */
	size_t off_text;     /* KF_TEXT: where the text as written goes */
	size_t off_inherit_text; /* KF_TEXT with KF_INHERIT: the relay_config text to copy */
	const struct list_spec *list; /* KT_LIST */
	const struct enum_spec *enm;  /* KT_ENUM */
	const char *def;     /* default in the file's own notation; NULL = none */
	uint64_t min, max;   /* bounds in the stored unit (bytes, ms, s, count) */
	const char *desc;    /* what the key does (the man page says the same) */
};

enum { LIST_BACKENDS, LIST_UDP, LIST_USERS, LIST_TOKENS, NLISTS };

/* Every top-level key and section (config_keys.c); cfg_nkeys rows. */
extern const struct key_spec cfg_keys[];
extern const size_t cfg_nkeys;
/* The keys of one backend (relay_backend_config offsets); cfg_nbackend_keys rows. */
extern const struct key_spec cfg_backend_keys[];
extern const size_t cfg_nbackend_keys;
/* The keys of one UDP listener (relay_udp_config offsets); cfg_nudp_keys rows. */
extern const struct key_spec cfg_udp_keys[];
extern const size_t cfg_nudp_keys;

/*---- the state of one load ----*/

struct loader {
	const char *name;          /* file name for messages */
	/* The absolute directory of the file, which KF_PATH values that are
	 * relative are resolved against; NULL (a buffer) = kept as written. */
	const char *base_dir;
	struct relay_config *cfg;
	yaml_document_t *doc;
	unsigned char *visited;    /* one flag per document node: a second visit is an alias */
	char *err;
	size_t errlen;
	/* 1-based line where each of the cfg_nkeys keys was first seen;
	 * 0 = not seen. Owned by the load. */
	size_t *seen;
	/* The same for the items of each list: item i's row j at
	 * lseen[list][i * nkeys + j]. */
	size_t *lseen[NLISTS];
	/* The list whose item is being read, and its index, so that a
	 * KF_UNIQUE value can be compared with the items before it. */
	const struct list_spec *cur_list;
	size_t cur_item;
	/* Where each name of query.backends was written, to point at an
	 * unknown one once the backends are read. */
	yaml_mark_t qmarks[RELAY_MAX_BACKENDS];
	size_t nqmarks;
};

/* The field at byte offset off of base (a relay_config or a list item). */
static inline void *cfg_field_at(void *base, size_t off)
{
	return (char *)base + off;
}

/*---- messages (config_value.c) ----*/

/*
 * Write "NAME:LINE:COL: message" (or "NAME: message" when node is NULL)
 * into the loader's error buffer, at node's first character. Control
 * characters in the result become '?'. Does nothing without a buffer.
 * Always returns -1, so a check can end with "return cfg_fail(...)".
 */
__attribute__((format(printf, 3, 4)))
int cfg_fail(struct loader *ld, const yaml_node_t *node, const char *fmt, ...);
/* The same at mark (a position libyaml or the loader made); NULL = none. */
__attribute__((format(printf, 3, 4)))
int cfg_fail_at(struct loader *ld, const yaml_mark_t *mark, const char *fmt, ...);
/*
 * A short copy of a user's value s for a message, in buf (size bytes, at
 * least 4): s itself when it fits, else cut on a UTF-8 character boundary
 * and ended with "...". Returns buf; never fails.
 */
const char *cfg_show(char *buf, size_t size, const char *s);
/* v milliseconds as a user would write them ("10s", "2h", "1500ms") in
 * buf (truncated to size). Returns buf; never fails. */
const char *cfg_fmt_ms(char *buf, size_t size, uint64_t v);

/*---- values (config_value.c) ----*/

/*
 * Check text as the value of the scalar key k and store it in base (a
 * relay_config or a list item); a string replaces, and frees, the one
 * there, and base owns the copy. at is the value's node for messages, NULL
 * when a built-in default is applied; path names the key in messages.
 * Returns 0, or -1 with the error reported through cfg_fail (base then
 * keeps its previous value). A key of no scalar type is a bug: fatal.
 */
int cfg_set_value(struct loader *ld, const struct key_spec *k, void *base,
                  const char *text, const yaml_node_t *at, const char *path);
/* Check text as one output of log_output (stderr, syslog, journal or an
 * absolute path without control characters). Returns 0, or -1 with the
 * error reported through cfg_fail at at. */
int cfg_check_log_output(struct loader *ld, const yaml_node_t *at, const char *text, const char *path);
/* 1 if s is a valid name ([A-Za-z0-9_.-]{1,64}), as KT_NAME wants. */
int cfg_valid_name(const char *s);
/* Free the strings the n rows of tab own in base and set them to NULL. */
void cfg_release_fields(const struct key_spec *tab, size_t n, void *base);
/* Fill base with the defaults of the ntab rows of tab; the file's values
 * overwrite them. An invalid built-in default is a bug: fatal. */
void cfg_apply_defaults(struct loader *ld, const struct key_spec *tab, size_t ntab, void *base);

#endif
