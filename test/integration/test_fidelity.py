#!/usr/bin/env python3
"""
Fidelity: relayd answers and stores what InfluxDB would.

One corpus of write requests is sent twice: straight to one influxd
("direct"), and through relayd to a second influxd ("relayed"), both
private, on loopback, with the same databases. Each case writes to a
database of its own (f000, f001, ...), so that cases cannot disturb each
other and a whole database can be compared. For each case:

- the answers must be of the same class: 2xx on both sides, or 400 on
  both. relayd answers at its door, before anything is queued, so a 400
  there must leave nothing: the relayed database stays empty. When
  influxd's message quotes the line it could not parse ("unable to parse
  '...'"), relayd's "line N:" must name that line (every physical line
  counts, blank, comment and continuation lines of a quoted newline too);
- a request relayd accepted is delivered: none may end in its dead-letter
  queue (relayctl dlq list);
- when both accepted, once relayd has delivered everything, the two
  databases read back identical: SHOW MEASUREMENTS, SHOW SERIES, SHOW TAG
  KEYS, SHOW FIELD KEYS (the field types) and SELECT * FROM /.*/ GROUP BY *
  with epoch=ns (every value, every timestamp, exactly). A point written
  without a timestamp gets the time it was accepted (influxd: when it
  parsed the request; relayd: when its door accepted it, see
  docs/architecture.md, "The ack path"); such a time is checked to lie
  within the request's POST, truncated to the precision, on each side, and
  then compared as "stamped" rather than by value.

Intended differences (checked as such, not as mismatches):

- partial writes: influxd 1.x stores the good points of a request that
  has bad ones and answers 400 "partial write". relayd refuses the whole
  request at its door (400, nothing queued), so that a writer never has
  to guess which half of a request was queued. For such a request the
  test checks relayd's 400 and that nothing was stored through relayd;
  the direct side may hold the good points, and is not compared;
- INTENDED_DIFFERENCES below: relayd refuses what influxd would take but
  store wrongly (a precision it does not know is read as ns by 1.6).

The v2 API: when the direct influxd has no /api/v2/write (1.x before
1.8: Debian's is 1.6.7), a v2 case is written to it through /write with
the same db, rp and precision (ns -> n, us -> u), which is what 1.8 does
with a v2 write; relayd always gets the v2 request.

relayd runs with quick retries and one write at a time (parallel: 1,
see the comment where it is configured).

KNOWN_MISMATCHES lists the cases where relayd is known to differ from
influxd and should not, each with its reason: each must still differ
(the test fails when one starts to match, so that it leaves the list with
its fix), except those in RACY, whose difference depends on timing. The
test prints its figures and every known mismatch as it is now.
"""

import gzip
import json
import re
import sys
import time
import unittest
import urllib.parse

import relaytest

T = 1_600_000_000_000_000_000  # 2020-09-13, in ns: far from "now"
INT64_MAX = 2 ** 63 - 1
# influxd stores nanoseconds in -9223372036854775806..9223372036854775806
# (the two values at each end of int64 are its own).
NS_MAX = INT64_MAX - 1
UNIT_NS = {None: 1, "": 1, "n": 1, "ns": 1, "u": 10 ** 3, "us": 10 ** 3, "ms": 10 ** 6,
           "s": 10 ** 9, "m": 60 * 10 ** 9, "h": 3600 * 10 ** 9}
V2_TO_V1_PRECISION = {None: None, "ns": "n", "us": "u", "ms": "ms", "s": "s"}


class Case:
    def __init__(self, name, body, precision=None, api="v1", gz=False, rp=None, bucket_rp=True):
        self.name = name
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.precision = precision
        self.api = api
        self.gz = gz
        self.rp = rp
        self.bucket_rp = bucket_rp  # v2: bucket "db/rp" (True) or "db"

    def describe(self):
        opts = ["api=%s" % self.api]
        if self.precision is not None:
            opts.append("precision=%s" % self.precision)
        if self.rp:
            opts.append("rp=%s" % self.rp)
        if self.gz:
            opts.append("gzip")
        return "%s (%s) body %r" % (self.name, ", ".join(opts), self.body[:300])


CORPUS = []


def case(name, body, **kw):
    assert all(c.name != name for c in CORPUS), name
    CORPUS.append(Case(name, body, **kw))


def lines(*ls, end="\n"):
    return end.join(ls) + end


# ---- the corpus -------------------------------------------------------------

# Escapes in every position.
case("esc_measurement", r"my\,meas\ ure,t=1 f=1 %d" % T)
case("esc_measurement_backslash", lines(r"back\\slash f=1 %d" % T, r"a\b f=2 %d" % T,
                                        r"\ lead f=3 %d" % T))
case("esc_measurement_equals", r"m\=eq f=1 %d" % T)
case("measurement_equals", "m=eq f=1 %d" % T)
case("esc_measurement_hash", lines(r"\#nocomment f=1 %d" % T, "m#hash f=2 %d" % T))
case("esc_tags", r"m,k\,1=v\,1,k\ 2=v\ 2,k\=3=v\=3 f=1 %d" % T)
case("esc_tag_value_leading_equals", "m,t==x f=1 %d" % T)
case("esc_tag_value_unescaped_equals", "m,t=a=b f=1 %d" % T)
case("esc_tag_backslash_before_comma", r"m,t=a\\,u=b f=1 %d" % T)
case("esc_tag_other_byte", r"m,t\x=v\y f=1 %d" % T)
case("esc_tag_value_backslash_end", lines(r"m,t=a\\ f=1 %d" % T))
case("esc_field_keys", r"m f\,k=1,f\ k=2,f\=k=3,f\\k=4,f\xk=5 %d" % T)
case("esc_field_key_backslash_end", r"m f\\=1 %d" % T)
case("esc_string_quotes_backslashes",
     r'm a="say \"hi\"",b="back\\slash",c="trail\\",d="lone\ back",e="\\\"",f="\n\t" %d' % T)
case("esc_string_separators", 'm s="a, b=c d",t="#x" %d' % T)
case("esc_string_newline", lines('m s="line one\nline two",g=1 %d' % T, "m g=2 %d" % (T + 1)))
case("esc_string_backslash_newline", lines('m s="a\\\nb",g=1 %d' % T, "m g=2 %d" % (T + 1)))
case("esc_string_newline_bad_after", lines('m s="a\n\nb" %d' % T, "m g=oops %d" % T))
case("esc_string_crlf_inside", b'm s="a\r\nb" %d\r\n' % T)
case("esc_string_unbalanced", 'm s="abc %d' % T)
case("esc_string_text_after", 'm s="abc"x %d' % T)
case("esc_string_empty", 'm s="" %d' % T)
case("esc_string_single_quote", "m s=\"it's\",u='x' %d" % T)
case("esc_field_value_backslash", r"m f=1\2 %d" % T)
# A backslash before a newline: InfluxDB 1.x reads on (the newline is part
# of the key), except after an escaped backslash.
case("esc_newline_measurement", lines("m\\", "x f=1 %d" % T))
case("esc_newline_tag_key", lines("m,t\\", "k=v f=1 %d" % T))
case("esc_newline_tag_value", lines("m,t=a\\", "b f=1 %d" % T))
case("esc_newline_field_key", lines("m f\\", "k=1 %d" % T))
case("esc_newline_field_value", lines("m f=1\\", " %d" % T))
case("esc_newline_after_timestamp", lines("m f=1 %d\\" % T, "m f=2 %d" % (T + 1)))
case("esc_backslash_then_newline", lines("m,t=a\\\\", "b f=1 %d" % T))
case("quotes_in_names", lines('"m" f=1 %d' % T, 'm,"t"="v" f=1 %d' % T, 'm "f"=1 %d' % T))
case("tab_in_measurement", "m\tx f=1 %d" % T)

# Unicode everywhere, and bytes that are not UTF-8.
case("unicode_all", "温度,城市=北京,ключ=значение 🌡=21.5,ñame=\"héllo 世界 🎉\" %d" % T)
case("unicode_combining", "cafe\u0301,t=\u200d\u05e9\u05dc\u05d5\u05dd f=\"\u202eabc\" %d" % T)
case("unicode_escaped", "m\\ 温度,k\\ 键=v\\,值 f\\ 场=1 %d" % T)
case("bytes_not_utf8_tags_string", b"m,t\xff=\xfe f=\"\xc3\x28\" %d\n" % T)
case("bytes_not_utf8_measurement", b"m\xff f=1 %d\n" % T)
case("bytes_not_utf8_field_key", b"m f\xff=1 %d\n" % T)
case("bytes_nul", b"m,t=a\x00b f=\"x\x00y\" %d\n" % T)

# Floats.
case("float_forms", lines(*("m,form=%s f=%s %d" % (i, v, T) for i, v in enumerate(
    ["1", "-1", "1.5", "-0.0", "0", ".5", "5.", "-.5", "007", "-007.25", "1e10", "1E10",
     "1e+10", "1e-10", "1.5E-3", ".5e3", "5.e3", "0e99999", "123456789012345678901234567890"]))))
case("float_max", lines("m f=1.7976931348623157e308 %d" % T,
                        "m f=-1.7976931348623157e308 %d" % (T + 1),
                        "m f=1.7976931348623158e308 %d" % (T + 2)))
case("float_min", lines("m f=4.9e-324 %d" % T, "m f=2.2250738585072014e-308 %d" % (T + 1),
                        "m f=-5e-324 %d" % (T + 2)))
case("float_precision", lines(*("m,k=%d f=%s %d" % (i, v, T) for i, v in enumerate(
    ["0.1", "0.30000000000000004", "0.3333333333333333", "9007199254740993", "1e23",
     "123456.789e-3", "2.5e-320"]))))
case("float_underflow", lines("m f=1e-400 %d" % T, "m f=1e-99999999999999999999 %d" % (T + 1)))
case("float_overflow_exponent", "m f=2e308 %d" % T)
case("float_overflow_rounding", "m f=1.7976931348623159e308 %d" % T)
case("float_overflow_huge_exponent", "m f=1e00000000000000000000000000000000001 %d" % T)
case("float_overflow_digits", "m f=%s %d" % ("9" * 310, T))
case("float_309_digits", "m f=%s %d" % ("1" + "0" * 307 + ".5", T))
case("float_long_zero_prefix", "m f=%s1 %d" % ("0" * 400, T))
for _bad in ["1.2.3", "1e", "1e+", "--1", "+1", "1_0", "0x10", "Inf", "NaN", "-Inf", "-", ".",
             "1ee5", "1e5.5", ".e5", "1.5e3i"]:
    case("float_bad_%s" % _bad.encode().hex(), "m f=%s %d" % (_bad, T))

# Integers.
case("int_limits", lines("m,k=max f=9223372036854775807i %d" % T,
                         "m,k=min f=-9223372036854775808i %d" % T,
                         "m,k=zero f=0i %d" % T, "m,k=negzero f=-0i %d" % T,
                         "m,k=lead f=0009223372036854775807i %d" % T))
case("int_max_plus_one", "m f=9223372036854775808i %d" % T)
case("int_min_minus_one", "m f=-9223372036854775809i %d" % T)
case("int_huge", "m f=99999999999999999999999i %d" % T)
for _bad in ["1.0i", "1e3i", "-i", "i1", "+1i", "1 i", "1ii"]:
    case("int_bad_%s" % _bad.encode().hex(), "m f=%s %d" % (_bad, T))

# Unsigned: InfluxDB 1.x refuses them, and so must relayd (v1 backend).
for _u in ["1u", "0u", "18446744073709551615u", "18446744073709551616u", "-1u"]:
    case("uint_%s" % _u, "m f=%s %d" % (_u, T))
case("uint_v2", "m f=1u %d" % T, api="v2")
case("uint_among_good_lines", lines("m f=1i %d" % T, "m f=2u %d" % (T + 1)))

# Booleans in every spelling, and near misses.
case("bool_spellings", lines(*("m,s=%s b=%s %d" % (i, v, T) for i, v in enumerate(
    ["t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"]))))
for _bad in ["tRUE", "yes", "tru", "falsey", "1b", "on"]:
    case("bool_bad_%s" % _bad, "m b=%s %d" % (_bad, T))

# All types on one line, and several fields.
case("all_types", 'm f=1.5,i=-3i,b=true,s="str" %d' % T)
case("duplicate_fields", "m f=1,f=2 %d" % T)
case("duplicate_fields_other_type", 'm f=1,f="x" %d' % T)
case("type_conflict_in_request", lines("m f=1 %d" % T, 'm f="x" %d' % (T + 1)))
case("type_conflict_int_float", lines("m f=1i %d" % T, "m f=1 %d" % (T + 1)))
case("same_point_twice", lines("m f=1 %d" % T, "m f=2 %d" % T))
case("tag_and_field_same_name", "m,f=tag f=1 %d" % T)
case("tags_unsorted", "m,b=2,c=3,a=1 f=1 %d" % T)

# Every precision: a plain timestamp, the largest and the smallest that
# InfluxDB stores, and one beyond each.
for _p in ["n", "ns", "u", "us", "ms", "s", "m", "h", None]:
    _unit = UNIT_NS[_p]
    _max = NS_MAX // _unit
    _pn = _p if _p is not None else "default"
    case("prec_%s_plain" % _pn, "m f=1 %d" % (T // _unit), precision=_p)
    case("prec_%s_max" % _pn, "m f=1 %d" % _max, precision=_p)
    case("prec_%s_min" % _pn, "m f=1 %d" % -_max, precision=_p)
    case("prec_%s_max_plus_one" % _pn, "m f=1 %d" % (_max + 1), precision=_p)
    case("prec_%s_min_minus_one" % _pn, "m f=1 %d" % (-_max - 1), precision=_p)
    case("prec_%s_unstamped" % _pn, lines("m,l=1 f=1", "m,l=2 f=2"), precision=_p)
case("prec_h_seconds_value", "m f=1 1700000000", precision="h")
case("prec_m_seconds_value", "m f=1 1700000000000", precision="m")
case("prec_ns_int64_max", "m f=1 %d" % INT64_MAX)
case("prec_ns_int64_min", "m f=1 %d" % -(INT64_MAX + 1))
case("prec_ns_beyond_int64", "m f=1 99999999999999999999")
case("prec_empty", "m f=1 %d" % T, precision="")
case("prec_micro_sign", "m f=1 %d" % (T // 1000), precision="\u00b5")
case("prec_micro_sign_s", "m f=1 %d" % (T // 1000), precision="\u00b5s")
case("prec_unknown_x", "m f=1 %d" % T, precision="x")

# Timestamps in other shapes.
case("ts_shapes", lines("m,k=zero f=1 0", "m,k=neg f=1 -1", "m,k=lead f=1 000%d" % T,
                        "m,k=negzero f=1 -0"))
case("ts_spaces", lines("m,k=a f=1  %d" % T, "m,k=b f=1 %d   " % T, "m,k=c   f=1 %d" % T))
case("ts_tab_after", "m f=1 %d\t" % T)
case("ts_tab_before", "m f=1\t%d" % T)
for _i, _bad in enumerate(["+1", "1.5", "1e9", "1 2", "0x10", "1a", "-"]):
    case("ts_bad_%d" % _i, "m f=1 %s" % _bad)

# Lines without a timestamp, alone and among stamped lines.
case("unstamped_mixed", lines("m,k=a f=1", "m,k=b f=2 %d" % T, "m,k=c f=3", "other g=1i"))
case("unstamped_same_series", lines("m f=1", "m f=2", "m f=3"))
case("unstamped_trailing_space", lines("m,k=a f=1 ", "m,k=b f=2\t"))

# Comments, blank lines, whitespace.
case("comments_blank", lines("# a comment", "", "m f=1 %d" % T, "   ", "  # indented",
                             "\t", "m f=2 %d" % (T + 1), "#last"))
case("comments_only", lines("# one", "", "# two"))
case("empty_body", b"")
case("blank_only", b"\n\n   \n")
case("leading_blanks", lines("   m f=1 %d" % T, "\tm,k=t f=2 %d" % T))
case("comment_then_bad", lines("# c", "", "m f=1 %d" % T, "m f=oops %d" % T))
case("no_final_newline", "m f=1 %d\nm f=2 %d" % (T, T + 1))

# CRLF line ends.
case("crlf", lines("m f=1 %d" % T, "# c", "", "m,k=x f=2", 'm s="v" %d' % (T + 1), end="\r\n"))
case("crlf_bad_line", lines("m f=1 %d" % T, "m f=bad %d" % T, end="\r\n"))
case("cr_inside_line", b"m f=1\r %d\n" % T)
case("cr_at_end_no_lf", b"m f=1 %d\r" % T)
case("crlf_string_last_unstamped", b'm s="v"\r\n')

# Duplicate tags.
case("dup_tags", "m,a=1,a=2 f=1 %d" % T)
case("dup_tags_apart", "m,a=1,b=2,a=3 f=1 %d" % T)
case("dup_tags_escaped", r"m,a\ b=1,a\ b=2 f=1 %d" % T)
case("dup_tags_many_unsorted", "m,%s,k05=dup f=1 %d" % (
    ",".join("k%02d=v" % i for i in range(40, 0, -1)), T))
case("many_tags_unsorted", "m,%s f=1 %d" % (",".join("k%02d=v" % i for i in range(40, 0, -1)), T))

# The name "time".
case("field_time_and_other", "m time=1,f=2 %d" % T)
case("field_time_only", "m time=1 %d" % T)
case("field_time_string", 'm f=1,time="x" %d' % T)
case("tag_key_time", "m,time=x f=1 %d" % T)
case("field_time_only_among_good", lines("m f=1 %d" % T, "m time=1 %d" % T, "m f=2 %d" % (T + 1)))
case("tag_key_time_among_good", lines("m f=1 %d" % T, "m,time=x f=1 %d" % T))
case("tag_value_time", "m,t=time f=1 %d" % T)
case("measurement_time", "time f=1 %d" % T)

# Malformed lines.
for _i, _bad in enumerate(["m", "m %d" % T, "m f", "m f=", "m,t f=1", "m,t= f=1", ",t=1 f=1",
                           "m, f=1", "m f=1,", "m f=1,,g=2", "m =1", "m\tf=1", "m,=v f=1",
                           "m,t=v, f=1", "m f=1, g=2", "m f=1 %d x" % T, "m  f=1 %d" % T,
                           "m f=1,g=2 ,h=3"]):
    case("malformed_%02d" % _i, _bad)

# Partial writes: influxd keeps the good lines and answers 400; relayd
# refuses the request whole (intended).
case("partial_middle", lines("m f=1 %d" % T, "m f=x %d" % (T + 1), "m f=3 %d" % (T + 2)))
case("partial_last", lines("m f=1 %d" % T, "m f=2 %d" % (T + 1), "m f=3 99999999999999999999"))
case("partial_two_bad", lines("m f=1 %d" % T, "m f=", "m f=3 %d" % T, "m,t f=1"))

# Series key length: key + "#!~#" + field key, at most 65535 bytes.
_mlen = 65535 - 4 - 1  # with the field key "f"
case("key_length_max", "%s f=1 %d" % ("k" * _mlen, T))
case("key_length_max_plus_one", "%s f=1 %d" % ("k" * (_mlen + 1), T))
# With an escaped field key: the limit counts its bytes as written.
case("key_length_escaped_field", "%s f\\ =1 %d" % ("k" * (_mlen - 2), T))
case("key_length_escaped_field_plus_one", "%s f\\ =1 %d" % ("k" * (_mlen - 1), T))

# Two spellings of one series (InfluxDB sorts the tags): the later point
# must win, as it does when written straight.
case("series_spellings_overwrite", lines(*["m,a=1,b=2 f=1 %d" % (T + i) for i in range(3000)]
                                         + ["m,b=2,a=1 f=2 %d" % (T + 2999)]))

# A larger request.
case("many_lines", lines(*("big,host=h%03d,region=r%d load=%d.%d,n=%di,up=%s,s=\"x%d\" %d"
                           % (i % 100, i % 7, i, i % 10, i, "tf"[i % 2], i, T + i * 1000)
                           for i in range(2000))))

# The v2 API (/api/v2/write?bucket=db/rp&org=), every v2 precision.
case("v2_bucket_rp", lines('m f=1,i=2i,b=t,s="x" %d' % T, "m,t=a f=2"), api="v2")
case("v2_bucket_db_only", lines("m f=1 %d" % T), api="v2", bucket_rp=False)
for _p in ["ns", "us", "ms", "s"]:
    case("v2_prec_%s" % _p, lines("m f=1 %d" % (T // UNIT_NS[_p]), "m,k=max f=1 %d"
                                 % (NS_MAX // UNIT_NS[_p]), "m,k=now f=2"), api="v2", precision=_p)
    case("v2_prec_%s_beyond" % _p, "m f=1 %d" % (NS_MAX // UNIT_NS[_p] + 1), api="v2",
         precision=_p)
case("v2_bad_line", lines("m f=1 %d" % T, "", "m f=1u %d" % T), api="v2")
case("v2_escapes_unicode", r'my\ m,t\,k=v\=1 f\ k="q\"\\",ü=1i %d' % T, api="v2")

# gzip bodies.
case("gzip_v1", lines("m,t=a f=1 %d" % T, "m,t=b f=2i", '# c', 'm s="z\nz" %d' % T), gz=True)
case("gzip_v1_precision_s", lines("m f=1 %d" % (T // 10 ** 9)), gz=True, precision="s")
case("gzip_bad_line", lines("m f=1 %d" % T, "m f=x %d" % T), gz=True)
case("gzip_v2", lines("m f=1 %d" % (T // 10 ** 6), "m g=t"), gz=True, api="v2", precision="ms")
case("gzip_empty", b"", gz=True)

# An explicit retention policy on v1.
case("v1_rp_autogen", lines("m f=1 %d" % T), rp="autogen")


# ---- what is intended, what is known to be wrong ---------------------------

# Cases where relayd answers (or stores) differently from influxd on
# purpose: name -> (influxd's status, relayd's status, why). relayd either
# stores what the writer meant where influxd 1.x stores something else, or
# refuses with a 400 what influxd would store mangled. Once the statuses
# are as listed, nothing else of the case is compared.
_CRLF = ("influxd 1.x keeps the '\\r' of a CRLF line end (a timestamp or number then is "
         "invalid, a string field ends in '\"'); relayd drops it, as the line's end, and "
         "delivers the line as meant")
_MICRO = ("us, \u00b5 and \u00b5s are no precision of influxd 1.6's /write, which reads "
          "them as ns (as any precision it does not know) and stores the points 1000 times "
          "too early; relayd reads them as microseconds, as the writer meant, and sends the "
          "backend 'u'")
_BSNL = ("influxd reads on past a newline escaped by a backslash in a measurement, tag or "
         "field key (the newline becomes part of the name); relayd ends the line there and "
         "refuses it rather than store a name with a newline")
_UTF8 = ("influxd 1.6.7 (Debian) answers 500 'proto: ... contains invalid UTF-8' for a "
         "measurement or field key that is not UTF-8 (and stores it when asked again); relayd "
         "refuses such a name (400) rather than retry a 500 for it")
INTENDED_DIFFERENCES = {
    "prec_unknown_x": (204, 400, "influxd 1.6 reads a precision it does not know as ns and "
                                 "stores the points at the wrong time; relayd refuses it"),
    "crlf": (400, 204, _CRLF),
    "crlf_bad_line": (400, 400, _CRLF + " (so influxd refuses line 1 first)"),
    "crlf_string_last_unstamped": (204, 204, _CRLF),
    "cr_at_end_no_lf": (400, 204, _CRLF),
    "esc_string_crlf_inside": (400, 204, _CRLF),
    "ts_tab_after": (400, 204, "influxd refuses a tab after the timestamp; relayd drops "
                               "trailing blanks and delivers the line"),
    "esc_string_text_after": (204, 400, "influxd takes text after a closing quote "
                                        "(m s=\"abc\"x stores 'abc\"'); relayd refuses the line"),
    "esc_newline_measurement": (204, 400, _BSNL),
    "esc_newline_tag_key": (204, 400, _BSNL),
    "esc_newline_tag_value": (204, 400, _BSNL),
    "esc_newline_field_key": (204, 400, _BSNL),
    "prec_us_plain": (204, 204, _MICRO),
    "prec_us_max": (204, 204, _MICRO),
    "prec_us_min": (204, 204, _MICRO),
    "prec_us_max_plus_one": (204, 400, _MICRO),
    "prec_us_min_minus_one": (204, 400, _MICRO),
    "prec_micro_sign": (204, 204, _MICRO),
    "prec_micro_sign_s": (204, 204, _MICRO),
    "bytes_not_utf8_measurement": (500, 400, _UTF8),
    "bytes_not_utf8_field_key": (500, 400, _UTF8),
}

# Cases where relayd differs from influxd and should not: name -> reason.
# Each is a relayd bug to fix; the fix removes the entry: the test fails
# while an entry here matches influxd (except for those in RACY, whose
# difference depends on timing and may not show in every run).
KNOWN_MISMATCHES = {}
RACY = set()


# ---- the test ---------------------------------------------------------------

READBACK = ("SHOW MEASUREMENTS; SHOW SERIES; SHOW TAG KEYS; SHOW FIELD KEYS; "
            "SELECT * FROM /.*/ GROUP BY *")
LINE_RX = re.compile(r"^line (\d+): ")
PARSE_RX = re.compile(r"unable to parse '(.*?)': ", re.S)


def quoted_line(body, msg):
    """The 1-based physical line of body that influxd's message quotes
    first ("unable to parse '<line>': ..."; influxd quotes the whole line
    from its first non-blank byte), or None when the message quotes no
    line or the text is not found as one."""
    m = PARSE_RX.search(msg)
    if not m:
        return None
    text = m.group(1).encode("utf-8", "surrogateescape")
    if not text:
        return None
    start, n = 0, 1
    while True:
        rest = body[start:].lstrip(b" \t")
        if rest.startswith(text) and rest[len(text):len(text) + 1] in (b"", b"\n"):
            return n
        nl = body.find(b"\n", start)
        if nl < 0:
            return None
        start, n = nl + 1, n + 1


def first_difference(want, got, path="readback"):
    """Where two readbacks first differ, and how, in a sentence."""
    if type(want) is type(got) and isinstance(want, list):
        for i, (a, b) in enumerate(zip(want, got)):
            if a != b:
                return first_difference(a, b, "%s[%d]" % (path, i))
        if len(want) != len(got):
            return "%s: %d items straight, %d through relayd (first extra: %s)" % (
                path, len(want), len(got), json.dumps((want + got)[min(len(want), len(got))])[:300])
    if type(want) is type(got) and isinstance(want, dict):
        for k in sorted(set(want) | set(got)):
            if want.get(k) != got.get(k):
                where = "%s[%r]" % (path, k)
                if "name" in want:
                    where += " (series %r, tags %r)" % (want["name"], want.get("tags"))
                return first_difference(want.get(k), got.get(k), where)
    return "%s: straight %s, through relayd %s" % (path, json.dumps(want)[:300],
                                                   json.dumps(got)[:300])


class Answer:
    def __init__(self, status, body, before, after):
        self.status = status
        self.body = body
        self.before = before
        self.after = after

    def json_message(self):
        """The message of a JSON error body: v1's {"error": ...} or v2's
        {"code": ..., "message": ...}; None when there is none."""
        try:
            doc = json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict):
            return None
        msg = doc.get("error", doc.get("message"))
        return msg if isinstance(msg, str) and msg else None

    @property
    def msg(self):
        m = self.json_message()
        return m if m is not None else self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "%d %r" % (self.status, self.msg) if self.status >= 300 else str(self.status)


class FidelityTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.direct = relaytest.Influxd(self.addCleanup)
        self.direct.write_config(self.tmp, subdir="direct")
        self.relayed = relaytest.Influxd(self.addCleanup)
        self.relayed.write_config(self.tmp, subdir="relayed")
        self.direct.start()
        self.relayed.start()
        self.dbs = ["f%03d" % i for i in range(len(CORPUS))]
        for influxd in (self.direct, self.relayed):
            st, _, body = influxd.request("POST", "/query?" + urllib.parse.urlencode(
                {"q": "; ".join('CREATE DATABASE "%s"' % db for db in self.dbs + ["v2probe"])}))
            self.assertEqual(st, 200, body[:300])
            self.assertNotIn(b'"error"', body)
        self.r = relaytest.Relayd(self.addCleanup)
        self.r.write_config(self.tmp, backends=[{
            "name": "relayed", "url": self.relayed.url,
            "retry_min": "100ms", "retry_max": "1s",
            # One write at a time: influxd 1.6.7 can drop a point of
            # concurrent writes into a new database while answering 204
            # (docs/influxdb.md, "Concurrent writes into a new shard");
            # what this test compares is the meaning of each line.
            "parallel": 1}])
        self.r.start()
        self.r.wait_ready()
        # 1.8 and later take /api/v2/write; 1.6.7 answers 404.
        st, _, _ = self.direct.request("POST", "/api/v2/write?bucket=v2probe", b"")
        self.direct_v2 = st in (200, 204)

    def post(self, port, c, db, to_relayd):
        headers = {"Content-Encoding": "gzip"} if c.gz else {}
        body = gzip.compress(c.body) if c.gz else c.body
        q = []
        if c.api == "v2" and (to_relayd or self.direct_v2):
            q.append(("bucket", db + "/autogen" if c.bucket_rp else db))
            q.append(("org", "fidelity"))
            path = "/api/v2/write"
            precision = c.precision
        else:
            # A v2 case towards an influxd without v2: what 1.8 does.
            q.append(("db", db))
            if c.api == "v2" and c.bucket_rp:
                q.append(("rp", "autogen"))
            path = "/write"
            precision = V2_TO_V1_PRECISION[c.precision] if c.api == "v2" else c.precision
        if c.rp:
            q.append(("rp", c.rp))
        if precision is not None:
            q.append(("precision", precision))
        before = time.time_ns()
        st, _, resp = relaytest.http_request(port, "POST", path + "?" + urllib.parse.urlencode(q),
                                             body, headers)
        return Answer(st, resp, before, time.time_ns())

    def readback(self, influxd, db, c, ans):
        """The database as the READBACK queries see it; a time within the
        request's POST (its start truncated to the precision) becomes
        "stamped"."""
        doc = influxd.query(db, READBACK, epoch="ns")
        unit = UNIT_NS.get(c.precision, 1)
        lo, hi = ans.before // unit * unit, ans.after
        out = []
        for res in doc["results"]:
            self.assertNotIn("error", res, "%s: %r" % (db, res))
            series = res.get("series", [])
            for s in series:
                if s["columns"] and s["columns"][0] == "time":
                    for row in s["values"]:
                        if isinstance(row[0], int) and lo <= row[0] <= hi:
                            row[0] = "stamped"
            out.append(series)
        return out

    def dead_letters(self):
        """db -> (status, message) of every dead letter of relayd's backend."""
        cp = self.r.relayctl("--json", "dlq", "list", "relayed")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        return {d["db"]: (d["status"], d["message"]) for d in json.loads(cp.stdout)["dead"]}

    def compare(self, c, db, d, r, dead):
        """What differs for one case: a list of sentences."""
        p = []
        if d.status not in (200, 204, 400) and c.name not in INTENDED_DIFFERENCES:
            p.append("influxd answered %r" % (d,))
        if r.status not in (204, 400):
            p.append("relayd answered %r" % (r,))
        if r.status == 400 and not r.json_message():
            p.append("relayd's 400 carries no JSON error: %r" % (r.body[:300],))
        want = INTENDED_DIFFERENCES.get(c.name)
        if want:
            if (d.status, r.status) != want[:2]:
                p.append("intended difference %r not seen: influxd %r, relayd %r"
                         % (want[:2], d, r))
            if db in dead:
                p.append("relayd answered %r, then its backend refused the batch for good: %r"
                         % (r, dead[db]))
            return p
        if d.status // 100 != r.status // 100:
            p.append("status: influxd %r, relayd %r" % (d, r))
        if db in dead:
            p.append("relayd answered %r, then its backend refused the batch for good: %r"
                     % (r, dead[db]))
        if r.status == 400:
            # Nothing of a refused request reached the queue.
            got = self.readback(self.relayed, db, c, r)
            if any(got):
                p.append("relayd answered 400 but delivered %r" % (got,))
        if d.status == 400 and r.status == 400:
            want_line = quoted_line(c.body, d.msg)
            m = LINE_RX.match(r.msg)
            if want_line is not None:
                self.stats["lines compared"] += 1
                if not m or int(m.group(1)) != want_line:
                    p.append("influxd refuses line %d first (%r), relayd says %r"
                             % (want_line, d.msg, r.msg))
        if d.status // 100 == 2 and r.status == 204 and db not in dead:
            self.stats["readbacks compared"] += 1
            want_data = self.readback(self.direct, db, c, d)
            got = self.readback(self.relayed, db, c, r)
            if want_data != got:
                # Read again after a pause: influxd under load may apply a
                # write after it answered (seen with 500 timeouts), which
                # tells a late write from a lost one.
                time.sleep(2)
                later = self.readback(self.relayed, db, c, r)
                p.append("stored: %s (2 s later: %s)" % (first_difference(want_data, got),
                                                        "matches" if later == want_data else "still differs"))
        return p

    def test_corpus_same_answers_same_data(self):
        t0 = time.monotonic()
        answers = []
        for c, db in zip(CORPUS, self.dbs):
            answers.append((self.post(self.direct.port, c, db, False),
                            self.post(self.r.port, c, db, True)))
        self.r.wait_status("relayed", timeout=30, pending_batches=0)
        dead = self.dead_letters()

        self.stats = {"lines compared": 0, "readbacks compared": 0}
        counts = {"influxd 2xx": 0, "influxd 400": 0, "influxd 400 partial write": 0,
                  "influxd other": 0, "relayd 204": 0, "relayd 400": 0, "relayd other": 0}
        problems = {}  # case name -> [what differs]
        for c, db, (d, r) in zip(CORPUS, self.dbs, answers):
            counts["influxd 2xx" if d.status // 100 == 2 else
                   "influxd 400" if d.status == 400 else "influxd other"] += 1
            counts["influxd 400 partial write"] += d.status == 400 and "partial write" in d.msg
            counts["relayd %s" % (r.status if r.status in (204, 400) else "other")] += 1
            p = self.compare(c, db, d, r, dead)
            if p:
                problems[c.name] = p

        sys.stderr.write("# fidelity: %d cases (direct influxd %s, v2 %s), %.1f s: %s, %s, "
                         "%d dead letters\n"
                         % (len(CORPUS), self.direct.version, "yes" if self.direct_v2 else
                            "no: v2 cases written to it through /write", time.monotonic() - t0,
                            ", ".join("%s %d" % kv for kv in counts.items()),
                            ", ".join("%s %d" % kv for kv in self.stats.items()), len(dead)))
        # The corpus keeps exercising each kind of comparison.
        for what in ("influxd 2xx", "influxd 400", "influxd 400 partial write", "relayd 204",
                     "relayd 400"):
            self.assertGreater(counts[what], 0, "no case gave %r" % what)
        for what, n in self.stats.items():
            self.assertGreater(n, 0, "no case had %r" % what)
        by_name = {c.name: c for c in CORPUS}
        for name in sorted(KNOWN_MISMATCHES):
            self.assertIn(name, by_name, "KNOWN_MISMATCHES names no case %r" % name)
            sys.stderr.write("# known mismatch %s: %s\n#   %s\n#   %s\n" % (
                name, KNOWN_MISMATCHES[name], by_name[name].describe(),
                "\n#   ".join(problems.get(name, ["(matches this time)"]))))
        for name in INTENDED_DIFFERENCES:
            self.assertIn(name, by_name, "INTENDED_DIFFERENCES names no case %r" % name)
        unexpected = {n: p for n, p in problems.items() if n not in KNOWN_MISMATCHES}
        if unexpected:
            # What relayd did besides the first 2xx: retries, timeouts.
            retries = [ln for ln in self.r.log_since_start().splitlines()
                       if re.search(r"retry|timeout|HTTP [45]\d\d|reset", ln, re.I)]
            sys.stderr.write("# relayd's log, retries and failures (%d lines):\n#   %s\n"
                             % (len(retries), "\n#   ".join(retries[-40:])))
        self.assertEqual(unexpected, {}, "mismatches:\n" + "\n".join(
            "%s: %s" % (by_name[n].describe(), "; ".join(p)) for n, p in sorted(unexpected.items())))
        fixed = sorted(n for n in KNOWN_MISMATCHES if n not in problems and n not in RACY)
        self.assertEqual(fixed, [], "these cases match influxd now: remove them from "
                                    "KNOWN_MISMATCHES")


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"))
