/*
 * config: turn relayd.yaml into a struct relay_config. libyaml builds the
 * document tree; one table of keys (type, where the value goes, default,
 * bounds, description) drives every check, so a new setting is one row.
 * The first problem is reported as "FILE:LINE:COL: what is wrong", pointing
 * at the node that is wrong, and a failed load leaves nothing allocated.
 * Never logs and never touches the data directory or the network: relayctl
 * check-config and the fuzzer call it as it is.
 */
#include "relay/base/config_internal.h"
#include "relay/base/util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* A configuration is a few kilobytes; anything this big is the wrong file
 * (a log, a database) and reading it all would only delay the error. */
#define CONFIG_MAX_FILE_BYTES ((size_t)1 << 20)
/* The deepest valid file is four levels (top, auth, users, one user). */
#define CONFIG_MAX_DEPTH 16

/*---- walking the document ----*/

/* "a mapping", "a sequence" or "a single value", for messages. */
static const char *node_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_MAPPING_NODE: return "a mapping";
	case YAML_SEQUENCE_NODE: return "a sequence";
	default: return "a single value";
	}
}

static yaml_node_t *node_at(struct loader *ld, int id)
{
	yaml_node_t *node = yaml_document_get_node(ld->doc, id);
	relay_assert(node != NULL);
	return node;
}

/*
 * Mark node as read. libyaml resolves an alias to the very node its anchor
 * names, so a node reached twice is an alias. Refusing those keeps the walk
 * finite (an anchor may contain its own alias) and linear (no "billion
 * laughs"), and a relay config has nothing worth sharing.
 */
static int enter(struct loader *ld, yaml_node_t *node, const yaml_node_t *at, const char *path)
{
	size_t i = (size_t)(node - ld->doc->nodes.start);
	if (ld->visited[i]) {
		if (path)
			return cfg_fail(ld, at, "'%s' is an alias: anchors and aliases are not supported", path);
		return cfg_fail(ld, at, "anchors and aliases are not supported");
	}
	ld->visited[i] = 1;
	return 0;
}

/* YAML's spellings of "nothing", as in "http:" with no value. */
static int is_null(const yaml_node_t *node)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };
	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(nulls); i++)
		if (strcmp((const char *)node->data.scalar.value, nulls[i]) == 0)
			return 1;
	return 0;
}

static int has_nul(const yaml_node_t *node)
{
	return strlen((const char *)node->data.scalar.value) != node->data.scalar.length;
}

/* The text of a scalar node; refuses "\0" escapes so C strings see it all. */
static int scalar_text(struct loader *ld, const yaml_node_t *node, const char *path, const char **out)
{
	if (node->type != YAML_SCALAR_NODE)
		return cfg_fail(ld, node, "'%s' must be a single value, not %s", path, node_kind(node));
	if (has_nul(node))
		return cfg_fail(ld, node, "'%s' contains a NUL character", path);
	*out = (const char *)node->data.scalar.value;
	return 0;
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* "unknown key", with a hint when the key belongs to another section or is
 * a near miss, because most unknown keys are typos or misplaced lines. */
static int unknown_key(struct loader *ld, const yaml_node_t *kn, const struct key_spec *tab,
                       size_t ntab, const char *section, const char *key, const char *prefix)
{
	char shown[64], hint[96] = "";
	size_t best = 3;

	if (strcmp(key, "<<") == 0)
		return cfg_fail(ld, kn, "merge keys (<<) are not supported%s%s%s",
		                prefix ? " in '" : "", prefix ? prefix : "", prefix ? "'" : "");
	for (size_t i = 0; i < ntab; i++) {
		if (strcmp(tab[i].name, key) == 0 && strcmp(tab[i].section, section) != 0) {
			snprintf(hint, sizeof(hint), " (did you mean '%s%s%s'?)", tab[i].section,
			         *tab[i].section ? "." : "", tab[i].name);
			break;
		}
		if (strcmp(tab[i].section, section) == 0) {
			size_t d = edit_distance(key, tab[i].name);
			if (d < best && d < strlen(key)) {
				best = d;
				snprintf(hint, sizeof(hint), " (did you mean '%s'?)", tab[i].name);
			}
		}
	}
	cfg_show(shown, sizeof(shown), key);
	if (prefix)
		return cfg_fail(ld, kn, "unknown key '%s' in '%s'%s", shown, prefix, hint);
	return cfg_fail(ld, kn, "unknown key '%s'%s", shown, hint);
}

static int walk_list(struct loader *ld, const struct list_spec *l, yaml_node_t *seq,
                     const yaml_node_t *kn, const char *path);

/*
 * A sequence of names (query.backends): each checked as a name, none
 * twice, stored joined by ',' (a name holds no ','), with where each was
 * written kept for check_config. An empty or null sequence leaves the
 * field NULL: the default.
 */
static int walk_names(struct loader *ld, const struct key_spec *k, void *base, yaml_node_t *seq,
                      const yaml_node_t *kn, const char *path)
{
	struct rbuf joined = RBUF_INIT;
	char shown[64];

	if (is_null(seq))
		return 0;
	if (seq->type != YAML_SEQUENCE_NODE)
		return cfg_fail(ld, seq, "'%s' must be a sequence of backend names ([a, b]), not %s", path,
		                node_kind(seq));
	size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (n > RELAY_MAX_BACKENDS)
		return cfg_fail(ld, seq, "'%s' has more than %d names", path, RELAY_MAX_BACKENDS);
	(void)kn;
	ld->nqmarks = 0;
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node_at(ld, seq->data.sequence.items.start[i]);
		const char *text = NULL;
		if (enter(ld, item, item, path) < 0 || scalar_text(ld, item, path, &text) < 0)
			goto fail;
		if (!cfg_valid_name(text)) {
			cfg_fail(ld, item, "'%s' must list backend names, not '%s'", path, cfg_show(shown, sizeof(shown), text));
			goto fail;
		}
		for (size_t j = 0; j < i; j++) {
			const yaml_node_t *prev = node_at(ld, seq->data.sequence.items.start[j]);
			if (strcmp((const char *)prev->data.scalar.value, text) == 0) {
				cfg_fail(ld, item, "'%s' names '%s' twice", path, text);
				goto fail;
			}
		}
		if (joined.len)
			rbuf_appendc(&joined, ',');
		rbuf_append(&joined, text, strlen(text));
		ld->qmarks[ld->nqmarks++] = item->start_mark;
	}
	char **field = cfg_field_at(base, k->off);
	free(*field);
	*field = joined.len ? xstrdup(rbuf_cstr(&joined)) : NULL;
	rbuf_release(&joined);
	return 0;
fail:
	rbuf_release(&joined);
	return -1;
}

/*
 * log_output as a sequence: outputs in order of preference, the first
 * available on the host being used (relay_log_open_first). Each is checked
 * as a single value would be; they are stored joined by '\n', which none
 * may contain.
 */
static int walk_outputs(struct loader *ld, const struct key_spec *k, void *base, yaml_node_t *seq,
                        const char *path)
{
	struct rbuf joined = RBUF_INIT;
	size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);

	if (n == 0)
		return cfg_fail(ld, seq, "'%s' must list at least one output (stderr, syslog, journal or a file)", path);
	if (n > 16)
		return cfg_fail(ld, seq, "'%s' lists more than 16 outputs", path);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node_at(ld, seq->data.sequence.items.start[i]);
		const char *text = NULL;
		if (enter(ld, item, item, path) < 0 || scalar_text(ld, item, path, &text) < 0 ||
		    cfg_check_log_output(ld, item, text, path) < 0) {
			rbuf_release(&joined);
			return -1;
		}
		if (joined.len)
			rbuf_appendc(&joined, '\n');
		rbuf_append(&joined, text, strlen(text));
	}
	char **field = cfg_field_at(base, k->off);
	free(*field);
	*field = xstrdup(rbuf_cstr(&joined));
	rbuf_release(&joined);
	return 0;
}

/*
 * Apply the mapping map to base using the rows of tab in section. seen
 * records where each row's key was found (duplicates and required keys);
 * prefix names the mapping in messages (NULL at the top level).
 */
static int walk_mapping(struct loader *ld, yaml_node_t *map, const struct key_spec *tab, size_t ntab,
                        const char *section, void *base, size_t *seen, const char *prefix)
{
	char path[160];

	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *kn = node_at(ld, pair->key), *vn = node_at(ld, pair->value);
		const struct key_spec *k = NULL;
		const char *key, *text = NULL;

		if (enter(ld, kn, kn, NULL) < 0)
			return -1;
		if (kn->type != YAML_SCALAR_NODE)
			return cfg_fail(ld, kn, "a key%s%s%s must be a word, not %s", prefix ? " in '" : "",
			                prefix ? prefix : "", prefix ? "'" : "", node_kind(kn));
		if (has_nul(kn))
			return cfg_fail(ld, kn, "a key contains a NUL character");
		key = (const char *)kn->data.scalar.value;
		for (size_t i = 0; i < ntab && !k; i++)
			if (strcmp(tab[i].section, section) == 0 && strcmp(tab[i].name, key) == 0)
				k = &tab[i];
		if (!k)
			return unknown_key(ld, kn, tab, ntab, section, key, prefix);

		snprintf(path, sizeof(path), "%s%s%s", prefix ? prefix : "", prefix ? "." : "", k->name);
		if (seen[k - tab])
			return cfg_fail(ld, kn, "duplicate key '%s' (first at line %zu)", path, seen[k - tab]);
		seen[k - tab] = kn->start_mark.line + 1;
		if (enter(ld, vn, kn, path) < 0)
			return -1;

		switch (k->type) {
		case KT_SECTION:
			/* "http:" with every line below commented out is an
			 * empty section, not a mistake. */
			if (is_null(vn))
				break;
			if (vn->type != YAML_MAPPING_NODE)
				return cfg_fail(ld, vn, "'%s' must be a mapping of keys, not %s", path, node_kind(vn));
			if (walk_mapping(ld, vn, tab, ntab, k->name, base, seen, path) < 0)
				return -1;
			break;
		case KT_LIST:
			if (walk_list(ld, k->list, vn, kn, path) < 0)
				return -1;
			break;
		case KT_NAMES:
			if (walk_names(ld, k, base, vn, kn, path) < 0)
				return -1;
			break;
		case KT_LOG_OUTPUT:
			if (vn->type == YAML_SEQUENCE_NODE) {
				if (walk_outputs(ld, k, base, vn, path) < 0)
					return -1;
				break;
			}
			if (is_null(vn))
				return cfg_fail(ld, kn, "'%s' needs a value", path);
			if (scalar_text(ld, vn, path, &text) < 0 || cfg_set_value(ld, k, base, text, vn, path) < 0)
				return -1;
			break;
		default:
			/* An empty value's position is wherever the next token
			 * starts, often a line below: point at the key. */
			if (is_null(vn))
				return cfg_fail(ld, kn, "'%s' needs a value", path);
			if (scalar_text(ld, vn, path, &text) < 0)
				return -1;
			if (cfg_set_value(ld, k, base, text, vn, path) < 0)
				return -1;
			break;
		}
	}

	for (size_t i = 0; i < ntab; i++) {
		if ((tab[i].flags & KF_REQUIRED) && !seen[i] && strcmp(tab[i].section, section) == 0) {
			snprintf(path, sizeof(path), "%s%s%s", prefix ? prefix : "", prefix ? "." : "", tab[i].name);
			return cfg_fail(ld, map, "'%s' is required", path);
		}
	}
	return 0;
}
static int walk_list(struct loader *ld, const struct list_spec *l, yaml_node_t *seq,
                     const yaml_node_t *kn, const char *path)
{
	struct relay_config *cfg = ld->cfg;
	size_t n;
	char ipath[200];
	char *items;

	if (is_null(seq)) {
		if (l->min == 0)
			return 0; /* "udp:" with every item commented out */
		return cfg_fail(ld, kn, "'%s' must list at least one %s", path, l->noun);
	}
	if (seq->type != YAML_SEQUENCE_NODE)
		return cfg_fail(ld, seq, "'%s' must be a sequence of %ss (- %s ...), not %s",
		                path, l->noun, l->needs, node_kind(seq));
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (n < l->min)
		return cfg_fail(ld, seq, "'%s' must list at least one %s", path, l->noun);
	if (n > l->max)
		return cfg_fail(ld, node_at(ld, seq->data.sequence.items.start[l->max]),
		                "'%s' has more than %zu entries", path, l->max); /* plural-ok: every list allows several */
	if (n == 0)
		return 0;

	/* Allocated whole and zeroed before any item is read, so a failure
	 * part way leaves only NULLs and owned strings to release. */
	items = xcalloc(n, l->elem_size);
	*(char **)cfg_field_at(cfg, l->off_items) = items;
	*(size_t *)cfg_field_at(cfg, l->off_count) = n;
	ld->lseen[l->index] = xcalloc(n * l->nkeys, sizeof(size_t));
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node_at(ld, seq->data.sequence.items.start[i]);
		void *elem = items + i * l->elem_size;
		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (enter(ld, item, item, ipath) < 0)
			return -1;
		if (item->type != YAML_MAPPING_NODE)
			return cfg_fail(ld, item, "'%s' must be a mapping with %s, not %s",
			                ipath, l->needs, node_kind(item));
		ld->cur_list = NULL; /* defaults are never duplicates */
		cfg_apply_defaults(ld, l->keys, l->nkeys, elem);
		ld->cur_list = l;
		ld->cur_item = i;
		if (walk_mapping(ld, item, l->keys, l->nkeys, "", elem,
		                 ld->lseen[l->index] + i * l->nkeys, ipath) < 0)
			return -1;
		ld->cur_list = NULL;
		if (l->check && l->check(ld, item, elem, ipath) < 0)
			return -1;
	}
	return 0;
}

/*---- loading ----*/

/* Backend keys left out take the queue: section's values, which may come
 * after the backends in the file, so this runs once everything is read. */
static void apply_inherited(struct loader *ld)
{
	const size_t nk = cfg_nbackend_keys;
	for (size_t b = 0; b < ld->cfg->nbackends; b++) {
		for (size_t i = 0; i < nk; i++) {
			const struct key_spec *k = &cfg_backend_keys[i];
			if (!(k->flags & KF_INHERIT) || ld->lseen[LIST_BACKENDS][b * nk + i])
				continue;
			*(uint64_t *)cfg_field_at(&ld->cfg->backends[b], k->off) =
				*(uint64_t *)cfg_field_at(ld->cfg, k->off_inherit);
			if (k->flags & KF_TEXT) {
				char **to = cfg_field_at(&ld->cfg->backends[b], k->off_text);
				free(*to);
				*to = xstrdup(*(char **)cfg_field_at(ld->cfg, k->off_inherit_text));
			}
		}
	}
}

static void syntax_error(struct loader *ld, const yaml_parser_t *parser, const char *text, size_t len)
{
	const char *problem = parser->problem ? parser->problem : "cannot parse";

	if (parser->error == YAML_MEMORY_ERROR)
		relay_fatal("out of memory parsing %s", ld->name);
	if (parser->error == YAML_READER_ERROR) {
		/* The reader reports a byte offset, not a mark; for UTF-8
		 * (every sane config) turn it into a line and column. */
		yaml_mark_t mark = { 0, 0, 0 };
		size_t off = parser->problem_offset < len ? parser->problem_offset : len;
		if (parser->encoding != YAML_UTF8_ENCODING) {
			cfg_fail_at(ld, NULL, "invalid yaml at byte %zu: %s", parser->problem_offset, problem);
			return;
		}
		for (size_t i = 0; i < off; i++) {
			if (text[i] == '\n') {
				mark.line++;
				mark.column = 0;
			} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
				mark.column++;
			}
		}
		cfg_fail_at(ld, &mark, "invalid yaml: %s", problem);
		return;
	}
	if (parser->context)
		cfg_fail_at(ld, &parser->problem_mark, "invalid yaml: %s (%s at line %zu)", problem,
		            parser->context, parser->context_mark.line + 1);
	else
		cfg_fail_at(ld, &parser->problem_mark, "invalid yaml: %s", problem);
}

/*
 * libyaml's scanner revisits every open flow level on each token, so
 * "[[[[..." costs time quadratic in its depth: 80KiB of brackets take
 * seconds, 1MiB hours. A pass over the events that stops at
 * CONFIG_MAX_DEPTH bounds that work before the document is built. It
 * meets any syntax error first, and reports it as the load would.
 */
static int check_depth(struct loader *ld, const char *text, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0, rc = 0, done = 0;

	if (!yaml_parser_initialize(&parser))
		relay_fatal("out of memory starting the yaml parser");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&parser, &ev)) {
			syntax_error(ld, &parser, text, len);
			rc = -1;
			break;
		}
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > CONFIG_MAX_DEPTH)
				rc = cfg_fail_at(ld, &ev.start_mark, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* Load the one document of text into *doc; on failure *doc is empty. */
static int parse_document(struct loader *ld, const char *text, size_t len, yaml_document_t *doc)
{
	yaml_parser_t parser;
	yaml_document_t extra;
	int rc = -1;

	if (!yaml_parser_initialize(&parser))
		relay_fatal("out of memory starting the yaml parser");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	/* The whole stream is parsed before anything is judged, so a syntax
	 * error anywhere is reported ahead of a bad value above it. */
	if (!yaml_parser_load(&parser, doc)) {
		syntax_error(ld, &parser, text, len);
		goto out;
	}
	/* A document with no root is the end of the stream. */
	if (yaml_document_get_root_node(doc)) {
		yaml_node_t *second;
		if (!yaml_parser_load(&parser, &extra)) {
			syntax_error(ld, &parser, text, len);
			yaml_document_delete(doc);
			goto out;
		}
		second = yaml_document_get_root_node(&extra);
		if (second) {
			cfg_fail(ld, second, "only one yaml document is allowed (remove the second '---')");
			yaml_document_delete(&extra);
			yaml_document_delete(doc);
			goto out;
		}
		yaml_document_delete(&extra);
	}
	rc = 0;
out:
	yaml_parser_delete(&parser);
	return rc;
}

/* The 1-based line a top-level key was seen on; 0 when the file left it out. */
static size_t key_line(struct loader *ld, const char *section, const char *name)
{
	for (size_t i = 0; i < cfg_nkeys; i++)
		if (strcmp(cfg_keys[i].section, section) == 0 && strcmp(cfg_keys[i].name, name) == 0)
			return ld->seen[i];
	return 0;
}

/* The line a top-level key was seen on, as a mark for messages. */
static yaml_mark_t key_mark(struct loader *ld, const char *section, const char *name)
{
	yaml_mark_t m = { 0, 0, 0 };
	size_t line = key_line(ld, section, name);
	if (line)
		m.line = line - 1;
	return m;
}

/* Rules between keys of different sections, once everything is read. */
static int check_config(struct loader *ld)
{
	const struct relay_config *cfg = ld->cfg;

	/* Auth switched on with nobody allowed in would refuse every write,
	 * which is never what the operator meant. */
	if (cfg->auth_enabled && cfg->nauth_users == 0 && cfg->nauth_tokens == 0) {
		yaml_mark_t m = key_mark(ld, "auth", "enabled");
		return cfg_fail_at(ld, &m, "'auth.enabled' is true but neither 'auth.users' nor 'auth.tokens' lists anyone");
	}
	/* Listeners: at least one; a TLS one needs its certificate, and a
	 * certificate without a TLS listener would be a silent mistake. */
	if (!cfg->listen_http && !cfg->listen_https) {
		yaml_mark_t m = key_mark(ld, "listen", "http");
		return cfg_fail_at(ld, &m, "'listen.http' is off and 'listen.https' is not set: relayd would listen on nothing");
	}
	if (cfg->listen_https && (!cfg->tls_cert_file || !cfg->tls_key_file)) {
		yaml_mark_t m = key_mark(ld, "listen", "https");
		return cfg_fail_at(ld, &m, "'listen.https' needs 'tls.cert_file' and 'tls.key_file'");
	}
	if (!cfg->listen_https && (cfg->tls_cert_file || cfg->tls_key_file || cfg->tls_client_ca_file)) {
		yaml_mark_t m = key_mark(ld, "tls", cfg->tls_cert_file ? "cert_file" : cfg->tls_key_file ? "key_file"
		                                                                                         : "client_ca_file");
		return cfg_fail_at(ld, &m, "'tls' names a certificate but 'listen.https' is not set: add "
		                   "'listen.https: HOST:PORT' or drop the 'tls' section");
	}
	if (cfg->tls_client_cert_auth && !cfg->tls_client_ca_file) {
		yaml_mark_t m = key_mark(ld, "tls", "client_cert_auth");
		return cfg_fail_at(ld, &m, "'tls.client_cert_auth' needs 'tls.client_ca_file' (the CA client certificates must come from)");
	}
	if (cfg->listen_http && cfg->listen_https && strcmp(cfg->listen_http, cfg->listen_https) == 0) {
		yaml_mark_t m = key_mark(ld, "listen", "https");
		return cfg_fail_at(ld, &m, "'listen.https' and 'listen.http' are the same address");
	}
	/* A 32-bit build: LMDB takes the map size as a size_t, and a larger
	 * one would be cut to its low bits (a tiny map). Refused here rather
	 * than at the queue's open. (A derived size is capped at SIZE_MAX,
	 * config_map_size_under.) Cannot happen where size_t has 64 bits. */
	if ((uint64_t)SIZE_MAX < UINT64_MAX && cfg->queue_map_bytes > (uint64_t)SIZE_MAX) {
		yaml_mark_t m = key_mark(ld, "queue", "map_size");
		return cfg_fail_at(ld, &m, "'queue.map_size' is larger than this 32-bit build can map (%zu bytes)", /* plural-ok: SIZE_MAX */
		                   (size_t)SIZE_MAX);
	}
	/* query.backends, resolved to indexes once the backends are read. */
	struct relay_config *mc = ld->cfg;
	mc->nquery = 0;
	if (!mc->query_backends) {
		for (size_t i = 0; i < mc->nbackends; i++)
			mc->query_order[mc->nquery++] = i;
	} else {
		const char *p = mc->query_backends;
		for (size_t q = 0; *p; q++) {
			size_t len = strcspn(p, ",");
			size_t i;
			for (i = 0; i < mc->nbackends; i++)
				if (strlen(mc->backends[i].name) == len && memcmp(mc->backends[i].name, p, len) == 0)
					break;
			if (i == mc->nbackends)
				return cfg_fail_at(ld, q < ld->nqmarks ? &ld->qmarks[q] : NULL,
				                   "'query.backends' names '%.*s', which is not a backend", (int)len, p);
			mc->query_order[mc->nquery++] = i;
			p += len + (p[len] == ',');
		}
	}
	/* A body of max_body_size must fit in the door's memory budget, or
	 * the largest writes could never be taken. */
	if (cfg->http_max_buffered_bytes < cfg->http_max_body_bytes) {
		yaml_mark_t m = key_mark(ld, "http", "max_buffered_size");
		return cfg_fail_at(ld, &m, "'http.max_buffered_size' (%" PRIu64 " byte%s) must be at least "
		                   "'http.max_body_size' (%" PRIu64 " byte%s)",
		                   cfg->http_max_buffered_bytes, relay_s(cfg->http_max_buffered_bytes),
		                   cfg->http_max_body_bytes, relay_s(cfg->http_max_body_bytes));
	}
	/* The same for a query's form body, held in the same budget; left
	 * out, its default comes down to a small budget rather than refuse a
	 * file that said nothing of queries. */
	if (cfg->http_max_buffered_bytes < cfg->query_max_body_bytes && !key_line(ld, "query", "max_body_size"))
		mc->query_max_body_bytes = cfg->http_max_buffered_bytes;
	if (cfg->http_max_buffered_bytes < cfg->query_max_body_bytes) {
		yaml_mark_t m = key_mark(ld, "query", "max_body_size");
		return cfg_fail_at(ld, &m, "'query.max_body_size' (%" PRIu64 " byte%s) must not be more than "
		                   "'http.max_buffered_size' (%" PRIu64 " byte%s)",
		                   cfg->query_max_body_bytes, relay_s(cfg->query_max_body_bytes),
		                   cfg->http_max_buffered_bytes, relay_s(cfg->http_max_buffered_bytes));
	}
	return 0;
}

static void resolve_in(const struct key_spec *tab, size_t n, void *base, const char *dir)
{
	for (size_t i = 0; i < n; i++) {
		char **p = cfg_field_at(base, tab[i].off);
		if (!(tab[i].flags & KF_PATH) || !*p || (*p)[0] == '/')
			continue;
		char *abs = relay_path_join(dir, *p);
		free(*p);
		*p = abs;
	}
}

/*
 * Every KF_PATH value that is relative is made absolute against the
 * directory of the file, here and only here: relayd (which leaves for "/"
 * when it detaches, and reloads from there) and relayctl (run from any
 * directory) then read the same store and the same certificates, and a
 * configuration means the same wherever it is read from. Driven by the
 * key table, so a path key added there is resolved too.
 */
static void resolve_paths(struct loader *ld)
{
	struct relay_config *cfg = ld->cfg;
	if (!ld->base_dir)
		return;
	resolve_in(cfg_keys, cfg_nkeys, cfg, ld->base_dir);
	for (size_t i = 0; i < cfg->nbackends; i++)
		resolve_in(cfg_backend_keys, cfg_nbackend_keys, &cfg->backends[i], ld->base_dir);
	for (size_t i = 0; i < cfg->nudp; i++)
		resolve_in(cfg_udp_keys, cfg_nudp_keys, &cfg->udp[i], ld->base_dir);
}

static int apply_document(struct loader *ld, yaml_document_t *doc)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	int rc;

	if (!root || is_null(root))
		return cfg_fail(ld, NULL, "empty configuration ('data_dir' and 'backends' are required)");
	if (root->type != YAML_MAPPING_NODE)
		return cfg_fail(ld, root, "the configuration must be a mapping of keys, not %s", node_kind(root));
	ld->doc = doc;
	ld->visited = xcalloc((size_t)(doc->nodes.top - doc->nodes.start), 1);
	ld->visited[root - doc->nodes.start] = 1;
	rc = walk_mapping(ld, root, cfg_keys, cfg_nkeys, "", ld->cfg, ld->seen, NULL);
	if (rc == 0) {
		apply_inherited(ld);
		resolve_paths(ld);
		rc = check_config(ld);
	}
	free(ld->visited);
	ld->visited = NULL;
	return rc;
}

/* The first line of text that is neither blank nor a comment: [start, *end). */
static const char *first_line(const char *text, size_t len, const char **end)
{
	const char *p = text, *stop = text + len;
	while (p < stop) {
		const char *e = memchr(p, '\n', (size_t)(stop - p));
		if (!e)
			e = stop;
		const char *q = p;
		while (q < e && (*q == ' ' || *q == '\t' || *q == '\r'))
			q++;
		if (q < e && *q != '#') {
			*end = e;
			return q;
		}
		p = e + 1;
	}
	return NULL;
}

static int toml_key_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.' || c == '"';
}

/*
 * Whether text looks like influxdb-relay's TOML: its first line that says
 * anything is a table header ([name], [[name]]) or "key = value". Asked
 * only of a file that failed to load, so a valid YAML file never gets the
 * hint, and a TOML file gets it whichever way libyaml or the checks
 * happened to fail on it ("[[http]]" is a YAML flow sequence, "a = b" a
 * YAML scalar).
 */
static int looks_like_toml(const char *text, size_t len)
{
	const char *end, *p = first_line(text, len, &end);
	if (!p)
		return 0;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	if (*p == '[') {
		int dbl = p + 1 < end && p[1] == '[';
		const char *q = p + 1 + dbl, *name = q;
		while (q < end && toml_key_char(*q))
			q++;
		if (q == name || q >= end || *q != ']' || (dbl && (q + 1 >= end || q[1] != ']')))
			return 0;
		q += 1 + dbl;
		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		return q == end || *q == '#';
	}
	const char *q = p;
	while (q < end && toml_key_char(*q))
		q++;
	if (q == p)
		return 0;
	while (q < end && (*q == ' ' || *q == '\t'))
		q++;
	return q < end && *q == '=' && (q + 1 == end || q[1] != '=');
}

static int load_text(const char *name, const char *base_dir, const char *text, size_t len,
                     struct relay_config *cfg, char *err, size_t errlen)
{
	/* On the heap: seen and the list tables are a few KiB, and this runs in fuzzers
	 * and on small thread stacks alike. */
	struct loader *ld = xcalloc(1, sizeof(*ld));
	yaml_document_t doc;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	if (err && errlen)
		err[0] = '\0';
	if (!text) {
		text = "";
		len = 0;
	}
	ld->name = name;
	ld->base_dir = base_dir;
	ld->cfg = cfg;
	ld->seen = xcalloc(cfg_nkeys, sizeof(*ld->seen));
	ld->err = err;
	ld->errlen = errlen;
	/* Defaults first, then the file overwrites them: every field is
	 * set even when its key is absent. */
	cfg->path = xstrdup(name);
	cfg_apply_defaults(ld, cfg_keys, cfg_nkeys, cfg);

	if (check_depth(ld, text, len) == 0 && parse_document(ld, text, len, &doc) == 0) {
		rc = apply_document(ld, &doc);
		yaml_document_delete(&doc);
	}
	for (size_t i = 0; i < NLISTS; i++)
		free(ld->lseen[i]);
	free(ld->seen);
	free(ld);
	/* Whatever was filled in before the error goes; *cfg ends zeroed. */
	if (rc < 0)
		config_release(cfg);
	/* People moving from influxdb-relay try its file first: say what it
	 * is and how to convert it rather than where libyaml gave up. */
	if (rc < 0 && err && errlen && looks_like_toml(text, len))
		snprintf(err, errlen, "%s looks like an influxdb-relay configuration (TOML); relayd reads YAML. "
		         "Convert it with: relayctl migrate %s > relayd.yaml (see docs/operations.md, "
		         "\"Moving from influxdb-relay\")", name, name);
	return rc;
}

int config_load_buffer(const char *name, const char *text, size_t len,
                       struct relay_config *cfg, char *err, size_t errlen)
{
	return load_text(name, NULL, text, len, cfg, err, errlen);
}

/* The absolute directory of path (a file): its dirname, against the
 * current directory when path is relative. The name as given, symbolic
 * links not followed, so that it is the directory the operator sees.
 * NULL when the current directory cannot be read. */
static char *config_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	struct rbuf b = RBUF_INIT;
	char cwd[PATH_MAX];

	if (path[0] != '/') {
		if (!getcwd(cwd, sizeof(cwd)))
			return NULL;
		rbuf_append(&b, cwd, strlen(cwd));
		if (slash) {
			if (strcmp(cwd, "/") != 0)
				rbuf_appendc(&b, '/');
			rbuf_append(&b, path, (size_t)(slash - path));
		}
	} else {
		rbuf_append(&b, path, slash == path ? 1 : (size_t)(slash - path));
	}
	char *out = xstrdup(rbuf_cstr(&b));
	rbuf_release(&b);
	return out;
}

int config_load(const char *path, struct relay_config *cfg, char *err, size_t errlen)
{
	struct rbuf buf = RBUF_INIT;
	char chunk[8192];
	size_t n;
	FILE *f;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	f = fopen(path, "rb");
	if (!f) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		rbuf_append(&buf, chunk, n);
		if (buf.len > CONFIG_MAX_FILE_BYTES) {
			if (err && errlen)
				snprintf(err, errlen, "%s: cannot read: larger than 1MiB, "
				         "not a configuration file", path);
			goto fail;
		}
	}
	if (ferror(f)) {
		/* fread leaves errno set, e.g. EISDIR for a directory. */
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		goto fail;
	}
	fclose(f);
	char *dir = config_dir(path);
	if (!dir) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot resolve its relative paths: the current directory: %s",
			         path, strerror(errno));
		rbuf_release(&buf);
		return -1;
	}
	rc = load_text(path, dir, buf.data ? buf.data : "", buf.len, cfg, err, errlen);
	free(dir);
	rbuf_release(&buf);
	return rc;

fail:
	fclose(f);
	rbuf_release(&buf);
	return -1;
}

void config_release(struct relay_config *cfg)
{
	if (!cfg)
		return;
	/* Each list's items, then the lists (the array pointers and counts
	 * are plain fields of cfg, zeroed below). */
	for (size_t i = 0; i < cfg_nkeys; i++) {
		const struct list_spec *l = cfg_keys[i].list;
		char *items;
		size_t n;
		if (cfg_keys[i].type != KT_LIST)
			continue;
		items = *(char **)cfg_field_at(cfg, l->off_items);
		n = *(size_t *)cfg_field_at(cfg, l->off_count);
		for (size_t j = 0; items && j < n; j++)
			cfg_release_fields(l->keys, l->nkeys, items + j * l->elem_size);
		free(items);
	}
	cfg_release_fields(cfg_keys, cfg_nkeys, cfg);
	free(cfg->path);
	memset(cfg, 0, sizeof(*cfg));
}
