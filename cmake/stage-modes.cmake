# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS): every directory of the
# staging tree becomes 0755 before the .deb is made from it. CPack creates
# them under the umask of whoever runs it (0700 under umask 077), and
# neither CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS nor
# CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS changed that with
# CPACK_SET_DESTDIR (CMake 3.25): dpkg would have installed
# /usr/share/doc/relayd and the like for root alone. The files have the
# modes of their install() rules already.
if(NOT CPACK_TEMPORARY_DIRECTORY OR NOT IS_DIRECTORY "${CPACK_TEMPORARY_DIRECTORY}")
  message(FATAL_ERROR "stage-modes: no staging directory (CPACK_TEMPORARY_DIRECTORY)")
endif()
file(GLOB_RECURSE _entries LIST_DIRECTORIES true "${CPACK_TEMPORARY_DIRECTORY}/*")
foreach(e "${CPACK_TEMPORARY_DIRECTORY}" ${_entries})
  if(IS_DIRECTORY "${e}" AND NOT IS_SYMLINK "${e}")
    file(CHMOD "${e}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
      WORLD_READ WORLD_EXECUTE)
  endif()
endforeach()
