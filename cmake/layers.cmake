# The layering rule, checked on every build: each folder may include only
# the folders and the third-party headers listed for it below. A forbidden
# include fails the build here (not only in review). Run as
#   cmake -DSRC=<source dir> -DSTAMP=<file> -P cmake/layers.cmake
#
# The dependencies point one way:
#   cmd/relayd, cmd/relayctl -> relay/{door,delivery,control} -> relay/base -> wal
# and relay/door -> relay/query -> relay/base (the query pass-through's
# upstream client and backend choice, which know nothing of the door),
# and relay/{door,query,delivery} -> relay/net -> relay/base (the one
# transport: plain and TLS streams over libuv; the only folder that may
# include OpenSSL)
# (relay/base and relay/control may include wal/ for its limits: the
# backend count and name length are the queue's, defined once there)
# relay/base is the leaves (no libuv, no I/O loop); wal/ is the queue and
# knows nothing of HTTP, libuv, YAML or logging.

# Third-party headers that mark a dependency. Anything else in <> is libc or
# POSIX and allowed everywhere.
set(THIRD_PARTY uv.h lmdb.h yaml.h llhttp.h zlib.h jansson.h systemd/ openssl/)

set(LAYERS wal relay/base relay/net relay/query relay/door relay/delivery relay/control cmd/relayd cmd/relayctl)
set(ALLOW_wal             "wal/" "lmdb.h")
set(ALLOW_relay/base      "relay/base/" "wal/" "yaml.h" "jansson.h")
set(ALLOW_relay/net       "relay/net/" "relay/base/" "uv.h" "openssl/")
set(ALLOW_relay/query     "relay/query/" "relay/net/" "relay/base/" "wal/" "uv.h" "llhttp.h" "zlib.h")
set(ALLOW_relay/door      "relay/door/" "relay/query/" "relay/net/" "relay/base/" "wal/" "uv.h" "llhttp.h" "zlib.h")
set(ALLOW_relay/delivery  "relay/delivery/" "relay/net/" "relay/base/" "wal/" "uv.h" "llhttp.h" "zlib.h")
set(ALLOW_relay/control   "relay/control/" "relay/base/" "wal/" "uv.h")
set(ALLOW_cmd/relayd      "cmd/relayd/" "relay/" "wal/" "uv.h" "systemd/")
set(ALLOW_cmd/relayctl    "cmd/relayctl/" "relay/base/" "relay/control/" "wal/")

set(bad "")
foreach(layer ${LAYERS})
  file(GLOB files ${SRC}/${layer}/*.c ${SRC}/${layer}/*.h)
  foreach(f ${files})
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]")
    foreach(line ${lines})
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[\"<]([^\">]+)[\">].*" "\\1" inc "${line}")
      if(line MATCHES "include[ \t]*\"")
        set(kind project)
      else()
        set(kind system)
        set(third FALSE)
        foreach(t ${THIRD_PARTY})
          string(FIND "${inc}" "${t}" at)
          if(at EQUAL 0)
            set(third TRUE)
          endif()
        endforeach()
        if(NOT third)
          continue()
        endif()
      endif()
      set(ok FALSE)
      foreach(a ${ALLOW_${layer}})
        string(FIND "${inc}" "${a}" at)
        if(at EQUAL 0)
          set(ok TRUE)
        endif()
      endforeach()
      if(NOT ok)
        file(RELATIVE_PATH rel ${SRC} ${f})
        string(APPEND bad "  ${rel}: #include ${inc} (${layer}/ may include: ${ALLOW_${layer}})\n")
      endif()
    endforeach()
  endforeach()
endforeach()

if(bad)
  message(FATAL_ERROR "layering: forbidden includes (see cmake/layers.cmake):\n${bad}")
endif()
file(WRITE ${STAMP} "ok\n")
