# The layer table of ARCHITECTURE.md, enforced: a file may include headers of its own folder and of
# LOWER layers only; an include of a higher layer, or of another folder of the same layer (engine/cpu
# and cuda/ are peers), fails the build with the file, the line and both layers named.
#
#   cmake -DROOT=<source dir> [-DSTAMP=<file touched on success>] -P tools/check_layers.cmake
#
# CMakeLists.txt runs it before any library compiles (target koff_layers), whenever a source changes.
# tools/, tests/ and bench/ sit above every layer and are not checked.

set(KOFF_LAYERS
  "tokenizer=0"      # stands alone
  "engine/tensor=1"  # Tensor, storage, the Backend table
  "engine/cpu=2"     # kernels (peers: neither includes the other)
  "cuda=2"
  "engine/ops=3"     # checks + dispatch
  "autograd=4"
  "engine/dist=5"    # communicators, data parallelism (peers of data and io)
  "engine/data=5"
  "engine/io=5"
  "engine/nn=6"
  "engine/koff=7")

if(NOT ROOT)
  message(FATAL_ERROR "check_layers: pass -DROOT=<source dir>")
endif()

# Longest matching folder of a path relative to ROOT -> out_folder, out_rank ("" / -1 when none).
function(koff_layer_of path out_folder out_rank)
  set(best "")
  set(best_rank -1)
  foreach(entry IN LISTS KOFF_LAYERS)
    string(REPLACE "=" ";" kv "${entry}")
    list(GET kv 0 folder)
    list(GET kv 1 rank)
    string(LENGTH "${folder}" n)
    string(LENGTH "${best}" nb)
    if(path MATCHES "^${folder}/" AND n GREATER nb)
      set(best "${folder}")
      set(best_rank ${rank})
    endif()
  endforeach()
  set(${out_folder} "${best}" PARENT_SCOPE)
  set(${out_rank} ${best_rank} PARENT_SCOPE)
endfunction()

set(errors "")
set(checked 0)
foreach(entry IN LISTS KOFF_LAYERS)
  string(REPLACE "=" ";" kv "${entry}")
  list(GET kv 0 folder)
  file(GLOB_RECURSE files RELATIVE "${ROOT}" "${ROOT}/${folder}/*.h" "${ROOT}/${folder}/*.cpp" "${ROOT}/${folder}/*.cu"
       "${ROOT}/${folder}/*.cuh")
  foreach(file IN LISTS files)
    koff_layer_of("${file}" own own_rank)
    if(NOT own STREQUAL folder)
      continue()  # a deeper folder of the table owns it
    endif()
    math(EXPR checked "${checked} + 1")
    file(STRINGS "${ROOT}/${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" inc "${line}")
      koff_layer_of("${inc}" theirs their_rank)
      if(their_rank EQUAL -1 OR theirs STREQUAL own)
        continue()
      endif()
      if(their_rank GREATER own_rank)
        string(APPEND errors "  ${file}: #include \"${inc}\" reaches UP from ${own} (layer ${own_rank}) to ${theirs} (layer ${their_rank})\n")
      elseif(their_rank EQUAL own_rank)
        string(APPEND errors "  ${file}: #include \"${inc}\" crosses between peers ${own} and ${theirs} (both layer ${own_rank})\n")
      endif()
    endforeach()
  endforeach()
endforeach()

if(errors)
  message(FATAL_ERROR "check_layers: includes that break the layer table (tools/check_layers.cmake):\n${errors}"
                      "A lower layer never includes a higher one: move the code down, or pass what it needs in.")
endif()
if(STAMP)
  file(WRITE "${STAMP}" "${checked} files checked\n")
endif()
