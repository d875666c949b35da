# The fingerprint of the sources a build compiles: sha256 over "sha256  path" lines of every
# file under src/, include/ and experiments/ plus the top-level CMakeLists.txt and cmake/,
# in sorted order. Results record it (manifest.json: extra.source_sha256), and
# `kvscope tables` reruns a config when it differs: the same sources give the same
# fingerprint on every machine, where the binary's own sha256 differs with the compiler.
# Usage: cmake -DSOURCE_DIR=... -DOUT=... -P source_fingerprint.cmake
file(GLOB_RECURSE files RELATIVE "${SOURCE_DIR}"
     "${SOURCE_DIR}/src/*" "${SOURCE_DIR}/include/*" "${SOURCE_DIR}/experiments/*"
     "${SOURCE_DIR}/cmake/*")
list(APPEND files CMakeLists.txt)
list(SORT files)
set(lines "")
foreach(f IN LISTS files)
  file(SHA256 "${SOURCE_DIR}/${f}" h)
  string(APPEND lines "${h}  ${f}\n")
endforeach()
string(SHA256 fingerprint "${lines}")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL "${fingerprint}\n")
  file(WRITE "${OUT}" "${fingerprint}\n")
endif()
