# Run by `cmake --install` (deploy/CMakeLists.txt): installs the systemd units
# and the example environment files for the prefix being installed to, which is
# only known at install time (--prefix, CPack's /usr). The units in
# deploy/systemd are written for the prefix /usr: /usr/bin/tfps-*, /etc/tfps.
# Inputs: TFPS_SYSTEMD_SRC, TFPS_SYSTEMD_STAGE, TFPS_BINDIR, TFPS_DOCDIR.
set(prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/+$" "" prefix "${prefix}")
foreach(d BINDIR DOCDIR)
  if(IS_ABSOLUTE "${TFPS_${d}}")
    set(${d} "${TFPS_${d}}")
  else()
    set(${d} "${prefix}/${TFPS_${d}}")
  endif()
endforeach()
# As GNUInstallDirs' CMAKE_INSTALL_FULL_SYSCONFDIR: /etc for /usr, else <prefix>/etc.
if(prefix STREQUAL "/usr" OR prefix STREQUAL "")
  set(ETCDIR "/etc/tfps")
else()
  set(ETCDIR "${prefix}/etc/tfps")
endif()
file(MAKE_DIRECTORY "${TFPS_SYSTEMD_STAGE}")
foreach(unit tfps-ps.service tfps-worker.service)
  file(READ "${TFPS_SYSTEMD_SRC}/${unit}" text)
  string(REPLACE "/usr/bin/" "${BINDIR}/" text "${text}")
  string(REPLACE "/etc/tfps/" "${ETCDIR}/" text "${text}")
  string(REPLACE "file:/usr/share/doc/tfps/" "file:${DOCDIR}/" text "${text}")
  file(WRITE "${TFPS_SYSTEMD_STAGE}/${unit}" "${text}")
endforeach()
file(INSTALL DESTINATION "${prefix}/lib/systemd/system" TYPE FILE PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${TFPS_SYSTEMD_STAGE}/tfps-ps.service" "${TFPS_SYSTEMD_STAGE}/tfps-worker.service")
file(INSTALL DESTINATION "${ETCDIR}" TYPE FILE PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${TFPS_SYSTEMD_SRC}/ps.env.example" "${TFPS_SYSTEMD_SRC}/worker.env.example")
