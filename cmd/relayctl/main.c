/*
 * relayctl's entry: the options, the command table and the dispatch. One
 * entry per command says which handler runs it, how many arguments it
 * takes, how it opens the queue, whether it asks relayd, and what the
 * usage text says of it: the usage text is made from the table, so that
 * the two cannot disagree. A command of two words ("dlq list") is an
 * entry with a sub; its first word names the family.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/relayctl/relayctl.h"

/* The packaged configuration (CMakeLists.txt sets it from the install
 * prefix); relayctl reads it when neither -c nor RELAYCTL_CONFIG names
 * another, as relayd's service does. */
#ifndef RELAYCTL_DEFAULT_CONFIG
#define RELAYCTL_DEFAULT_CONFIG "/etc/relayd/relayd.yaml"
#endif
#ifndef RELAYCTL_MIGRATE_SCRIPT_DEFAULT
#define RELAYCTL_MIGRATE_SCRIPT_DEFAULT "/usr/share/relayd/migrate-influxdb-relay"
#endif

/* Views first, then changes, each in the order the usage text lists them. */
static const struct cmd commands[] = {
	{ "status", NULL, cmd_status, 0, 0, WAL_F_RDONLY, CMD_DAEMON, "[--watch [SECONDS]]",
	  "every backend: state, backlog, age, dead letters, delivery" },
	{ "peek", NULL, cmd_peek, 1, 1, WAL_F_RDONLY, CMD_DAEMON, "BACKEND [-n N]",
	  "the next N pending batches (default 10)" },
	{ "show", NULL, cmd_show, 2, 2, WAL_F_RDONLY, 0, "BACKEND SEQ",
	  "the line protocol of a batch, pending or dead" },
	{ "dlq", "list", cmd_dlq_list, 1, 1, WAL_F_RDONLY, 0, "BACKEND",
	  "the dead-letter queue, with the backend's errors" },
	{ "dlq", "show", cmd_dlq_show, 1, -1, WAL_F_RDONLY, 0, "BACKEND SEQ...",
	  "dead letters with their line protocol" },
	{ "export", NULL, cmd_export, 2, 2, WAL_F_RDONLY, 0, "BACKEND FILE [--dlq]",
	  "pending batches (or dead letters) as influx -import files" },
	{ "verify", NULL, cmd_verify, 0, 0, WAL_F_RDONLY, 0, "", "check the whole store; exit 1 on damage" },
	/* wal_salvage reads the damaged file itself, never through wal_open */
	{ "salvage", NULL, cmd_salvage, 1, 1, 0, 0, "DEST",
	  "copy every readable pending batch of a damaged store into a new\nstore in DEST (relayd stopped)" },
	{ "dump", NULL, cmd_dump, 1, 1, WAL_F_RDONLY, 0, "BACKEND", "pending batches as JSON lines" },
	{ "backup", NULL, cmd_backup, 1, 1, WAL_F_RDONLY, 0, "DEST",
	  "a consistent copy of the queue into the new or empty\ndirectory DEST, relayd running or not" },
	{ "pause", NULL, cmd_pause_resume, 1, 1, WAL_F_SHARED, CMD_CHANGES | CMD_DAEMON, "BACKEND", NULL },
	{ "resume", NULL, cmd_pause_resume, 1, 1, WAL_F_SHARED, CMD_CHANGES | CMD_DAEMON, "BACKEND",
	  "stop / restart delivery (the queue keeps filling)" },
	{ "retry", NULL, cmd_retry, 1, 1, 0, CMD_CHANGES | CMD_DAEMON, "BACKEND",
	  "ask relayd to skip the current backoff wait" },
	/* read-only without --yes: it only says what it would drop */
	{ "purge", NULL, cmd_purge, 1, 1, WAL_F_SHARED, CMD_CHANGES | CMD_DAEMON, "BACKEND --yes",
	  "drop every pending batch of BACKEND" },
	{ "dlq", "requeue", cmd_dlq_move, 1, -1, WAL_F_SHARED, CMD_CHANGES | CMD_DAEMON, "BACKEND SEQ...|--all",
	  "put dead letters back at the end of the queue" },
	{ "dlq", "drop", cmd_dlq_move, 1, -1, WAL_F_SHARED, CMD_CHANGES, "BACKEND SEQ...|--all",
	  "delete dead letters (--all needs --yes)" },
	{ "import", NULL, cmd_import, 2, 2, WAL_F_SHARED, CMD_CHANGES | CMD_DAEMON,
	  "BACKEND FILE --db DB [--rp RP] [--precision P]", "validate a line-protocol file and queue it for BACKEND" },
	/* relayd only: its memory, not the queue */
	{ "drain", NULL, cmd_drain, 0, 0, 0, CMD_CHANGES | CMD_DAEMON, "[--wait [--timeout D]] [--stop]",
	  "take relayd out of the write pool (/health: 503\n\"draining\") while it delivers its queues;\n"
	  "--wait until they are empty, --stop then stops it" },
	{ "undrain", NULL, cmd_drain, 0, 0, 0, CMD_CHANGES | CMD_DAEMON, "", "end a drain" },
};

/* status --watch without a number of seconds: watch(1)'s default. */
#define WATCH_DEFAULT_S 2.0

/* Whether s looks like a number of seconds ("2", "0.5", ".5"). */
static int is_seconds(const char *s)
{
	int digits = 0;
	for (; *s; s++) {
		if (*s >= '0' && *s <= '9')
			digits = 1;
		else if (*s != '.')
			return 0;
	}
	return digits;
}

/* Where a command's description starts in the usage text. */
#define USAGE_COLUMN 37

/* The usage text's lines for the commands of one section. */
static void usage_section(struct rbuf *b, unsigned changes)
{
	struct rbuf syn = RBUF_INIT;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(commands); i++) {
		const struct cmd *e = &commands[i];
		if ((e->flags & CMD_CHANGES) != changes)
			continue;
		/* "pause BACKEND | resume BACKEND": an entry without help
		 * shares the next one's line. */
		if (syn.len)
			rbuf_append(&syn, " | ", 3);
		rbuf_appendf(&syn, "%s%s%s%s%s", e->name, e->sub ? " " : "", e->sub ? e->sub : "", *e->args ? " " : "",
			     e->args);
		if (!e->help)
			continue;
		if (syn.len < USAGE_COLUMN - 2)
			rbuf_appendf(b, "  %-*s", USAGE_COLUMN - 2, rbuf_cstr(&syn));
		else
			rbuf_appendf(b, "  %s\n%*s", rbuf_cstr(&syn), USAGE_COLUMN, "");
		for (const char *h = e->help; *h; h++) {
			rbuf_appendc(b, *h);
			if (*h == '\n')
				rbuf_appendf(b, "%*s", USAGE_COLUMN, "");
		}
		rbuf_appendc(b, '\n');
		syn.len = 0;
	}
	rbuf_release(&syn);
}

static void usage(FILE *f)
{
	struct rbuf b = RBUF_INIT;
	rbuf_appendf(&b, "usage: relayctl [-c FILE] [--json] COMMAND [ARGS]\n\nviews (relayd running or not):\n");
	usage_section(&b, 0);
	rbuf_appendf(&b, "changes (take effect at once when relayd runs, else at its next start):\n");
	usage_section(&b, CMD_CHANGES);
	rbuf_appendf(&b, "without a configuration:\n"
			 "  migrate FILE [-o OUT] [--udp-db DB] [--force]\n"
			 "                                     an influxdb-relay TOML file as relayd YAML\n"
			 "                                     (on stdout, or into OUT)\n"
			 "  version                            print relayctl's version\n"
			 "\n"
			 "  -c, --config FILE   relayd's configuration (data_dir and backends); default:\n"
			 "                      $RELAYCTL_CONFIG, else " RELAYCTL_DEFAULT_CONFIG "\n"
			 "  --json              machine-readable output\n"
			 "  -V, --version       print relayctl's version and exit\n"
			 "  -h, --help          this help\n");
	fwrite(b.data, 1, b.len, f);
	rbuf_release(&b);
}

/*
 * The entry for cmd with nargs arguments, or NULL after saying why (2 to
 * return). A family ("dlq") takes its sub as the first argument, then at
 * least a BACKEND.
 */
static const struct cmd *find_command(const char *cmd, char ***args, int *nargs)
{
	int family = 0;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(commands); i++)
		family |= commands[i].sub && strcmp(commands[i].name, cmd) == 0;
	if (family && *nargs < 2) {
		struct rbuf subs = RBUF_INIT;
		for (size_t i = 0; i < RELAY_ARRAY_SIZE(commands); i++)
			if (commands[i].sub && strcmp(commands[i].name, cmd) == 0)
				rbuf_appendf(&subs, "%s%s", subs.len ? "|" : "", commands[i].sub);
		fprintf(stderr, "relayctl: usage: %s %s BACKEND [SEQ...|--all]\n", cmd, rbuf_cstr(&subs));
		rbuf_release(&subs);
		return NULL;
	}
	const char *sub = family ? (*args)[0] : NULL;
	int n = *nargs - family;
	for (size_t i = 0; i < RELAY_ARRAY_SIZE(commands); i++) {
		const struct cmd *e = &commands[i];
		if (strcmp(e->name, cmd) != 0 || (family && (!e->sub || strcmp(e->sub, sub) != 0)))
			continue;
		if (n < e->min_args || (e->max_args >= 0 && n > e->max_args))
			continue;
		*args += family;
		*nargs = n;
		return e;
	}
	if (family) {
		fprintf(stderr, "relayctl: unknown %s command or wrong arguments: '%s'\n", cmd, sub);
	} else {
		fprintf(stderr, "relayctl: unknown command or wrong arguments: '%s'\n", cmd);
		usage(stderr);
	}
	return NULL;
}

/*
 * relayctl migrate FILE [-o OUT] [--udp-db DB] [--force]...: the converter
 * is a Python script (tomllib reads the TOML); relayctl only finds and
 * runs it, so that operators have one tool. Every word after "migrate" is
 * the script's, passed untouched: the script owns its options (it tells
 * the user to add --udp-db), and relayctl need not learn each one. Its
 * exit status is relayctl's (exec). 127 when it cannot run, as a shell
 * says.
 */
static int run_migrate(char **args, int nargs, const char *out)
{
	if (nargs < 1) {
		fprintf(stderr, "relayctl: usage: migrate FILE [-o OUT] [--udp-db DB] [--force]\n");
		return 2;
	}
	const char *env = getenv("RELAYCTL_MIGRATE_SCRIPT");
	const char *script = env && *env ? env : RELAYCTL_MIGRATE_SCRIPT_DEFAULT;
	if (access(script, R_OK) < 0) {
		fprintf(stderr, "relayctl: migrate: the converter '%s' is missing (%s)%s\n", script, strerror(errno),
			env && *env ? " (from RELAYCTL_MIGRATE_SCRIPT)" : ": reinstall relayd, or set RELAYCTL_MIGRATE_SCRIPT");
		return 127;
	}
	/* python3 SCRIPT WORDS... [-o OUT]: -o before the command (relayctl
	 * -o OUT migrate FILE) is passed on after the words that followed. */
	char py[] = "python3", opt_o[] = "-o";
	char **argv = calloc((size_t)nargs + 5, sizeof(*argv));
	if (!argv) {
		fprintf(stderr, "relayctl: migrate: %s\n", strerror(ENOMEM));
		return 127;
	}
	int n = 0;
	argv[n++] = py;
	argv[n++] = (char *)script;
	for (int i = 0; i < nargs; i++)
		argv[n++] = args[i];
	if (out) {
		argv[n++] = opt_o;
		argv[n++] = (char *)out;
	}
	fflush(stdout);
	execvp(py, argv);
	if (errno == ENOENT)
		fprintf(stderr, "relayctl migrate needs python3: apt-get install python3\n");
	else
		fprintf(stderr, "relayctl: migrate: cannot run python3: %s\n", strerror(errno));
	free(argv);
	return 127;
}

int main(int argc, char **argv)
{
	enum { O_JSON = 256, O_YES, O_ALL, O_DLQ, O_DB, O_RP, O_PREC, O_WATCH, O_WAIT, O_TIMEOUT, O_STOP };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, O_JSON },
		{ "count", required_argument, NULL, 'n' },
		{ "yes", no_argument, NULL, O_YES },
		{ "all", no_argument, NULL, O_ALL },
		{ "dlq", no_argument, NULL, O_DLQ },
		{ "db", required_argument, NULL, O_DB },
		{ "rp", required_argument, NULL, O_RP },
		{ "precision", required_argument, NULL, O_PREC },
		{ "watch", optional_argument, NULL, O_WATCH },
		{ "wait", no_argument, NULL, O_WAIT },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "stop", no_argument, NULL, O_STOP },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "output", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl c;
	const char *config_path = NULL, *out = NULL;
	char err[1024], *end;
	int ch;

	memset(&c, 0, sizeof(c));
	c.count = 10;
	c.precision = "ns";
	/* Options may come anywhere: relayctl -c F status --json. Except
	 * after "migrate": what follows it is the converter's (run_migrate),
	 * so relayctl's parsing stops there. The command is the first word
	 * that is neither an option nor an option's value. */
	int full_argc = argc;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0)
			break;
		if (strcmp(a, "migrate") == 0) {
			argc = i + 1; /* getopt sees up to the command only */
			break;
		}
		if (a[0] != '-' || !a[1])
			break; /* the command is another one */
		/* Skip the value of an option that takes one as the next word. */
		if (strcmp(a, "-c") == 0 || strcmp(a, "-n") == 0 || strcmp(a, "-o") == 0 ||
		    strcmp(a, "--config") == 0 || strcmp(a, "--count") == 0 || strcmp(a, "--db") == 0 ||
		    strcmp(a, "--rp") == 0 || strcmp(a, "--precision") == 0 || strcmp(a, "--timeout") == 0 ||
		    strcmp(a, "--output") == 0)
			i++;
	}
	while ((ch = getopt_long(argc, argv, "c:n:jhVo:", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': config_path = optarg; break;
		case 'o': out = optarg; break;
		case 'j':
		case O_JSON: c.json = 1; break;
		case 'n':
			c.count = strtol(optarg, &end, 10);
			if (*end || c.count <= 0) {
				fprintf(stderr, "relayctl: -n wants a positive number, not '%s'\n", optarg);
				return 2;
			}
			break;
		case O_YES: c.yes = 1; break;
		case O_ALL: c.all = 1; break;
		case O_DLQ: c.dlq = 1; break;
		case O_DB: c.db = optarg; break;
		case O_RP: c.rp = optarg; break;
		case O_PREC: c.precision = optarg; break;
		case O_WATCH: {
			/* --watch=N, --watch N, or --watch alone: every 2 s, as
			 * watch(1). The next word is N only when it is a number:
			 * "--watch status" and "--watch -c F" keep their words. */
			const char *v = optarg;
			if (!v && optind < argc && is_seconds(argv[optind]))
				v = argv[optind++];
			if (!v) {
				c.watch = WATCH_DEFAULT_S;
				break;
			}
			c.watch = strtod(v, &end);
			if (!*v || *end || !(c.watch > 0) || c.watch > 86400) {
				fprintf(stderr, "relayctl: --watch wants a number of seconds, not '%s'\n", v);
				return 2;
			}
			break;
		}
		case O_WAIT: c.wait = 1; break;
		case O_STOP: c.stop = 1; break;
		case O_TIMEOUT:
			if (parse_duration_ms(optarg, &c.timeout_ms) < 0 || !c.timeout_ms) {
				fprintf(stderr, "relayctl: --timeout wants a duration (30s, 5m), not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("relayctl %s\n", RELAYD_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	char **args = argv + optind + 1;
	int nargs = argc - optind - 1;
	/* The commands that need no configuration. */
	if (strcmp(cmd, "version") == 0 && nargs == 0) {
		printf("relayctl %s\n", RELAYD_VERSION);
		return 0;
	}
	if (strcmp(cmd, "migrate") == 0)
		return run_migrate(args, full_argc - optind - 1, out);
	if (out) {
		fprintf(stderr, "relayctl: -o is for migrate only\n");
		return 2;
	}
	/* -c, else the environment, else the packaged file: the one a
	 * packaged relayd runs with. Which one was tried is said when it
	 * does not load, so that an operator without -c knows where relayctl
	 * looked. */
	const char *from = "-c";
	if (!config_path && getenv("RELAYCTL_CONFIG") && *getenv("RELAYCTL_CONFIG")) {
		config_path = getenv("RELAYCTL_CONFIG");
		from = "RELAYCTL_CONFIG";
	}
	if (!config_path) {
		config_path = RELAYCTL_DEFAULT_CONFIG;
		from = NULL;
	}
	if (!from && access(config_path, F_OK) < 0) {
		fprintf(stderr,
			"relayctl: no configuration: tried the default '%s' (%s); give relayd's with -c FILE or "
			"RELAYCTL_CONFIG=FILE\n",
			config_path, strerror(errno));
		return 1;
	}
	/* The configuration first: a command is looked up only in a
	 * configuration that loads. */
	if (config_load(config_path, &c.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "relayctl: %s%s\n", err, from ? "" : " (the default configuration; -c FILE names another)");
		return 1;
	}
	int rc = 2;
	c.cmd = find_command(cmd, &args, &nargs);
	if (c.cmd) {
		if (c.cmd->flags & CMD_DAEMON)
			c.sock_ok = control_socket_path(c.cfg.data_dir, c.sock, sizeof(c.sock)) == 0;
		c.args = args;
		c.nargs = nargs;
		rc = c.cmd->run(&c);
	}
	config_release(&c.cfg);
	return rc;
}
