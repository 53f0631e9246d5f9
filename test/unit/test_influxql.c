/* The InfluxQL statement classifier, from a table: what each query is,
 * how many statements it has, and that the scanner is not fooled by ';',
 * INTO or keywords inside strings, identifiers, comments and regexes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "relay/base/influxql.h"

static const struct {
	const char *q;
	enum iql_class cls;
	size_t count;
	const char *verb; /* of the first statement, or NULL */
} cases[] = {
	{ "", IQL_EMPTY, 0, NULL },
	{ "  ;; -- nothing\n /* at all */ ;", IQL_EMPTY, 0, NULL },
	{ "SELECT * FROM cpu", IQL_READ, 1, "SELECT" },
	{ "select mean(value) from cpu where time > now() - 1h group by time(10m)", IQL_READ, 1, "SELECT" },
	{ "SHOW DATABASES", IQL_READ, 1, "SHOW DATABASES" },
	{ "show measurements with measurement =~ /cpu;drop/", IQL_READ, 1, "SHOW MEASUREMENTS" },
	{ "SHOW TAG VALUES FROM cpu WITH KEY = \"host\"", IQL_READ, 1, "SHOW TAG" },
	{ "EXPLAIN SELECT * FROM cpu", IQL_READ, 1, "EXPLAIN SELECT" },
	{ "EXPLAIN ANALYZE SELECT * INTO b FROM cpu", IQL_WRITE, 1, "EXPLAIN SELECT INTO" },
	{ "EXPLAIN DROP DATABASE x", IQL_INVALID, 1, "EXPLAIN" },
	/* state that every backend must get, in order with the writes */
	{ "CREATE DATABASE telegraf", IQL_REPLICATE, 1, "CREATE DATABASE" },
	{ "create database \"my db\" with duration 1d", IQL_REPLICATE, 1, "CREATE DATABASE" },
	{ "CREATE RETENTION POLICY \"one_week\" ON db DURATION 7d REPLICATION 1", IQL_REPLICATE, 1,
	  "CREATE RETENTION POLICY" },
	/* other state: never to one backend only */
	{ "DROP DATABASE telegraf", IQL_WRITE, 1, "DROP DATABASE" },
	{ "drop series from cpu where host = 'a'", IQL_WRITE, 1, "DROP SERIES" },
	{ "DELETE FROM cpu WHERE time < now() - 30d", IQL_WRITE, 1, "DELETE FROM" },
	{ "ALTER RETENTION POLICY autogen ON db DURATION 1d", IQL_WRITE, 1, "ALTER RETENTION" },
	{ "GRANT ALL TO admin", IQL_WRITE, 1, "GRANT ALL" },
	{ "REVOKE READ ON db FROM bob", IQL_WRITE, 1, "REVOKE READ" },
	{ "CREATE USER bob WITH PASSWORD 'x;y'", IQL_WRITE, 1, "CREATE USER" },
	{ "SET PASSWORD FOR bob = 'p'", IQL_WRITE, 1, "SET PASSWORD" },
	{ "KILL QUERY 36", IQL_WRITE, 1, "KILL QUERY" },
	{ "CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT mean(v) INTO m FROM c GROUP BY time(1h) END", IQL_WRITE, 1,
	  "CREATE CONTINUOUS" },
	{ "CREATE SUBSCRIPTION s ON db.autogen DESTINATIONS ALL 'udp://h:1'", IQL_WRITE, 1, "CREATE SUBSCRIPTION" },
	{ "SELECT * INTO copy FROM cpu", IQL_WRITE, 1, "SELECT INTO" },
	{ "select * into \"db\".\"rp\".:MEASUREMENT from /.*/ group by *", IQL_WRITE, 1, "SELECT INTO" },
	/* several statements: the highest class */
	{ "SELECT 1 FROM a; SHOW DATABASES", IQL_READ, 2, "SELECT" },
	{ "CREATE DATABASE a; SELECT * FROM b", IQL_REPLICATE, 2, "CREATE DATABASE" },
	{ "SELECT * FROM a;DROP MEASUREMENT a;", IQL_WRITE, 2, "SELECT" },
	/* ';', INTO and keywords where they are not what they seem */
	{ "SELECT \"into\" FROM \"a;DROP DATABASE x\"", IQL_READ, 1, "SELECT" },
	{ "SELECT * FROM a WHERE t = 'x; DROP DATABASE y' AND u = 'it\\'s; INTO'", IQL_READ, 1, "SELECT" },
	{ "SELECT * FROM /a;DROP DATABASE b/", IQL_READ, 1, "SELECT" },
	{ "SELECT * FROM a, /b;c/ WHERE h =~ /x;y\\/z/ AND h !~ /;/", IQL_READ, 1, "SELECT" },
	{ "SELECT a / b FROM c; SELECT (a)/2 FROM c", IQL_READ, 2, "SELECT" },
	{ "SELECT * FROM a -- ; DROP DATABASE b\n", IQL_READ, 1, "SELECT" },
	{ "SELECT * /* ; DROP DATABASE b */ FROM a", IQL_READ, 1, "SELECT" },
	{ "SELECT * FROM a WHERE h = $host; SHOW TAG KEYS", IQL_READ, 2, "SELECT" },
	/* doubt errs towards state: a bare INTO anywhere in a SELECT */
	{ "SELECT * FROM a WHERE b = 1 INTO", IQL_WRITE, 1, "SELECT INTO" },
	/* not InfluxQL */
	{ "SELEC * FROM a", IQL_INVALID, 1, "SELEC" },
	{ "\"SELECT\" * FROM a", IQL_INVALID, 1, "?" },
	{ "SELECT 'unclosed", IQL_INVALID, 0, NULL },
	{ "SELECT * FROM \"unclosed", IQL_INVALID, 0, NULL },
	{ "SELECT * FROM /unclosed", IQL_INVALID, 0, NULL },
	{ "SELECT * /* unclosed", IQL_INVALID, 0, NULL },
	{ "CREATE TABLE t", IQL_INVALID, 1, "CREATE" },
	{ "SHOW DATABASES; ( 1", IQL_INVALID, 2, "SHOW DATABASES" },
};

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct iql_stmt st[4];
		size_t count = 99;
		char err[128];
		const char *q = cases[i].q;
		enum iql_class c = iql_split(q, strlen(q), st, 4, &count, err, sizeof(err));
		if (c != cases[i].cls)
			fail_msg("%s: %s, expected %s", q, iql_class_name(c), iql_class_name(cases[i].cls));
		if (c == IQL_INVALID && !err[0])
			fail_msg("%s: invalid without a message", q);
		if (c != IQL_INVALID && err[0])
			fail_msg("%s: message %s", q, err);
		if (cases[i].verb == NULL)
			continue;
		if (count != cases[i].count)
			fail_msg("%s: %zu statements, expected %zu", q, count, cases[i].count);
		if (strcmp(st[0].verb, cases[i].verb) != 0)
			fail_msg("%s: verb %s, expected %s", q, st[0].verb, cases[i].verb);
	}
}

static void test_spans(void **state)
{
	(void)state;
	static const char q[] = "  SELECT * FROM a ; -- c\n CREATE DATABASE \"x;y\";;DROP SERIES FROM b  ";
	struct iql_stmt st[2];
	size_t count;
	enum iql_class c = iql_split(q, sizeof(q) - 1, st, 2, &count, NULL, 0);
	/* the class covers the statement that did not fit */
	assert_int_equal(c, IQL_WRITE);
	assert_int_equal(count, 3);
	assert_int_equal(st[0].cls, IQL_READ);
	assert_int_equal(st[0].len, strlen("SELECT * FROM a"));
	assert_memory_equal(q + st[0].off, "SELECT * FROM a", st[0].len);
	assert_int_equal(st[1].cls, IQL_REPLICATE);
	assert_int_equal(st[1].len, strlen("CREATE DATABASE \"x;y\""));
	assert_memory_equal(q + st[1].off, "CREATE DATABASE \"x;y\"", st[1].len);
	/* NUL inside is a byte like any other */
	static const char z[] = "SHOW DATABASES\0; DROP DATABASE a";
	assert_int_equal(iql_split(z, sizeof(z) - 1, NULL, 0, &count, NULL, 0), IQL_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_spans),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
