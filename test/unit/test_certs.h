/*
 * test_certs: certificates for the unit tests over TLS (test_net, and
 * through tls_server.h test_http_client and test_upstream), made with
 * OpenSSL in a temporary directory: the directory itself, a certificate
 * (a CA or a leaf, self-signed or signed by a CA), and PEM files.
 * Header-only (static functions, cmocka's asserts): each test program
 * includes it once, after <cmocka.h>.
 */
#ifndef RELAY_TEST_CERTS_H
#define RELAY_TEST_CERTS_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static char certdir[256];

/* name in the certificates' directory; the last 8 stay valid at once. */
static char *cpath(const char *name)
{
	static char bufs[8][320];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", certdir, name);
	return b;
}

/* A fresh certificates' directory, $TMPDIR/prefix.XXXXXX (/tmp without TMPDIR). */
static void certdir_make(const char *prefix)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(certdir, sizeof(certdir), "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
	assert_non_null(mkdtemp(certdir));
}

/* The n files names in the certificates' directory, and the directory. */
static void certdir_remove(const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		unlink(cpath(names[i]));
	rmdir(certdir);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for key named cn, signed by ca_key/ca (NULL: self-signed),
 * valid from now+from_s to now+to_s; is_ca: a CA's; eku: the extended key
 * usage of a leaf ("serverAuth", "clientAuth"; NULL: none); san: the
 * subjectAltName (NULL: none). The caller frees it. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, EVP_PKEY *ca_key, X509 *ca, long from_s, long to_s,
		       const char *san, int is_ca, const char *eku)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	X509_set_pubkey(x, key);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : nm);
	X509 *issuer = ca ? ca : x;
	add_ext(x, issuer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, issuer, NID_key_usage, is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	add_ext(x, issuer, NID_subject_key_identifier, "hash");
	if (!is_ca && eku)
		add_ext(x, issuer, NID_ext_key_usage, eku);
	if (san)
		add_ext(x, issuer, NID_subject_alt_name, san);
	assert_true(X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) > 0);
	return x;
}

/* cert and/or key (NULL: left out) into the file name. */
static void write_pem(const char *name, X509 *cert, EVP_PKEY *key)
{
	FILE *f = fopen(cpath(name), "w");
	assert_non_null(f);
	if (cert)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

#endif
