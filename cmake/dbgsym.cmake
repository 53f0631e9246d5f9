# CPack post-build script (CPACK_POST_BUILD_SCRIPTS): builds
# relayd-dbgsym_VERSION_ARCH.deb beside the relayd .deb that CPack made,
# with the debug information of the binaries it holds, as Debian's
# dbgsym packages carry it: /usr/lib/debug/.build-id/XX/YYYY.debug, which
# gdb and debuginfod clients find by the stripped binary's build-id.
#
# Why not CPACK_DEBIAN_DEBUGINFO_PACKAGE: CMake 3.25 does split the
# debug information for a package without components, but the .ddeb it
# writes lists absolute paths of the build machine in its md5sums and
# has no copyright or changelog (lintian: errors), and its name ends in
# .ddeb, which apt does not install as a file.
#
# The binaries must carry debug information (.debug_info: a RelWithDebInfo
# or Debug build): without it the script fails, and cpack with it,
# rather than publish a relayd-dbgsym that holds nothing of use beside a
# relayd that looks as if it had one.
#
# Every file and directory of the staging tree gets its mode set here
# (0644, 0755): what file() creates follows the umask, and under umask
# 077 dpkg-deb refused the control directory (0700).
#
# Inputs (CPackConfig.cmake): CPACK_PACKAGE_FILES (set by CPack),
# CPACK_RELAY_DEBUG_BINARIES (the unstripped binaries in the build
# directory: "installed path=build path" pairs), CPACK_PACKAGE_CONTACT.

foreach(deb IN LISTS CPACK_PACKAGE_FILES)
  get_filename_component(_name ${deb} NAME)
  if(_name MATCHES "^relayd_.*\\.deb$")
    set(MAIN_DEB ${deb})
  endif()
endforeach()
if(NOT MAIN_DEB)
  message(FATAL_ERROR "dbgsym: no relayd .deb among ${CPACK_PACKAGE_FILES}")
endif()
# CPack copies MAIN_DEB from its staging area into the output directory
# (cpack -B) after this script: the dbgsym goes straight there.
if(CPACK_PACKAGE_DIRECTORY)
  set(OUT_DIR ${CPACK_PACKAGE_DIRECTORY})
else()
  get_filename_component(OUT_DIR ${MAIN_DEB} DIRECTORY)
endif()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "dbgsym: ${ARGN}: ${err}")
  endif()
  set(OUT "${out}" PARENT_SCOPE)
endfunction()

run(dpkg-deb -f ${MAIN_DEB} Version)
set(VERSION ${OUT})
run(dpkg-deb -f ${MAIN_DEB} Architecture)
set(ARCH ${OUT})

set(STAGE ${OUT_DIR}/_CPack_Packages/relayd-dbgsym)
file(REMOVE_RECURSE ${STAGE})
file(MAKE_DIRECTORY ${STAGE}/DEBIAN ${STAGE}/usr/share/doc)
# Debian's dbgsym packages point their doc directory at the package they
# depend on at the exact version: its copyright and changelog cover them.
file(CREATE_LINK relayd ${STAGE}/usr/share/doc/relayd-dbgsym SYMBOLIC)

# The binaries inside the .deb, to check that each debug file matches.
set(EXTRACT ${OUT_DIR}/_CPack_Packages/relayd-dbgsym-main)
file(REMOVE_RECURSE ${EXTRACT})
run(dpkg-deb -x ${MAIN_DEB} ${EXTRACT})

set(BUILD_IDS)
set(MD5SUMS "")
foreach(pair IN LISTS CPACK_RELAY_DEBUG_BINARIES)
  string(REPLACE "=" ";" pair "${pair}")
  list(GET pair 0 installed)
  list(GET pair 1 built)
  foreach(f ${EXTRACT}/${installed} ${built})
    run(readelf -n ${f})
    if(NOT OUT MATCHES "Build ID: ([0-9a-f][0-9a-f])([0-9a-f]+)")
      message(FATAL_ERROR "dbgsym: ${f} has no build-id")
    endif()
    list(APPEND _ids_${installed} ${CMAKE_MATCH_1}${CMAKE_MATCH_2})
  endforeach()
  run(readelf -S -W ${built})
  if(NOT OUT MATCHES "\\.z?debug_info")
    message(FATAL_ERROR "dbgsym: ${built} has no debug information (.debug_info): build with "
      "-DCMAKE_BUILD_TYPE=RelWithDebInfo (or Debug) to make relayd-dbgsym")
  endif()
  list(GET _ids_${installed} 0 id_pkg)
  list(GET _ids_${installed} 1 id_built)
  if(NOT id_pkg STREQUAL id_built)
    message(FATAL_ERROR "dbgsym: ${installed} in the .deb (${id_pkg}) is not ${built} (${id_built})")
  endif()
  string(SUBSTRING ${id_pkg} 0 2 head)
  string(SUBSTRING ${id_pkg} 2 -1 tail)
  set(rel usr/lib/debug/.build-id/${head}/${tail}.debug)
  file(MAKE_DIRECTORY ${STAGE}/usr/lib/debug/.build-id/${head})
  run(objcopy --only-keep-debug --compress-debug-sections ${built} ${STAGE}/${rel})
  file(CHMOD ${STAGE}/${rel} PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  file(MD5 ${STAGE}/${rel} sum)
  string(APPEND MD5SUMS "${sum}  ${rel}\n")
  list(APPEND BUILD_IDS ${id_pkg})
endforeach()
file(REMOVE_RECURSE ${EXTRACT})

run(du -sk --apparent-size ${STAGE}/usr)
string(REGEX MATCH "^[0-9]+" SIZE "${OUT}")
list(JOIN BUILD_IDS " " BUILD_IDS)
file(WRITE ${STAGE}/DEBIAN/md5sums "${MD5SUMS}")
file(WRITE ${STAGE}/DEBIAN/control
"Package: relayd-dbgsym
Source: relayd
Version: ${VERSION}
Architecture: ${ARCH}
Maintainer: ${CPACK_PACKAGE_CONTACT}
Installed-Size: ${SIZE}
Depends: relayd (= ${VERSION})
Section: debug
Priority: optional
Description: debug symbols for relayd
Auto-Built-Package: debug-symbols
Build-Ids: ${BUILD_IDS}
")
file(GLOB_RECURSE _entries LIST_DIRECTORIES true ${STAGE}/*)
foreach(e ${STAGE} ${_entries})
  if(IS_SYMLINK ${e})
    continue()
  elseif(IS_DIRECTORY ${e})
    file(CHMOD ${e} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
      WORLD_READ WORLD_EXECUTE)
  else()
    file(CHMOD ${e} PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endif()
endforeach()
set(DBGSYM_DEB ${OUT_DIR}/relayd-dbgsym_${VERSION}_${ARCH}.deb)
run(dpkg-deb --root-owner-group --build ${STAGE} ${DBGSYM_DEB})
file(REMOVE_RECURSE ${STAGE})
message(STATUS "dbgsym: ${DBGSYM_DEB} generated.")
