# install.cmake — `cmake --install`: the CLI, the libraries (libattnc.so/.a: the compiler with
# the runtime; libattnc_rt.a/.so: the runtime alone, all an AOT object needs), the headers,
# pkg-config files, a CMake package (find_package(attnc) -> attnc::attnc, attnc::attnc_rt,
# attnc::attnc_static, attnc::attnc_rt_shared), the man page and the Python package.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

add_library(attnc_rt_shared SHARED $<TARGET_OBJECTS:attnc_rt_obj>)
set_target_properties(attnc_rt_shared PROPERTIES OUTPUT_NAME attnc_rt)
target_link_libraries(attnc_rt_shared PUBLIC Threads::Threads m)

foreach(t attnc_shared attnc_rt_shared)
  set_target_properties(${t} PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
endforeach()
set_target_properties(attnc_shared PROPERTIES EXPORT_NAME attnc INSTALL_RPATH_USE_LINK_PATH ON)
set_target_properties(attnc PROPERTIES EXPORT_NAME attnc_static)
set_target_properties(attnc_cli PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
# consumers of the shared libraries need neither LLVM nor the source tree
foreach(t attnc attnc_shared attnc_rt attnc_rt_shared)
  set_property(TARGET ${t} PROPERTY INTERFACE_INCLUDE_DIRECTORIES
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
endforeach()
set_property(TARGET attnc_shared PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads m)

install(TARGETS attnc_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS attnc attnc_shared attnc_rt attnc_rt_shared EXPORT attncTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET attnc_mpi)
  install(TARGETS attnc_mpi ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY include/attn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
else()
  install(DIRECTORY include/attn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} PATTERN attn_mpi.h EXCLUDE)
endif()

set(ATTNC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/attnc)
install(EXPORT attncTargets NAMESPACE attnc:: DESTINATION ${ATTNC_CMAKE_DIR})
set(ATTNC_LLVM_DIR "${LLVM_DIR}")
configure_package_config_file(cmake/attncConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/attncConfig.cmake
  INSTALL_DESTINATION ${ATTNC_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/attncConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/attncConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/attncConfigVersion.cmake
  DESTINATION ${ATTNC_CMAKE_DIR})

# pkg-config: paths relative to the .pc file, so `cmake --install --prefix P` works for any P
file(RELATIVE_PATH ATTNC_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" ATTNC_PC_TO_PREFIX "${ATTNC_PC_TO_PREFIX}")
set(ATTNC_LLVM_LIBDIR "${LLVM_LIBRARY_DIR}")
foreach(pc attnc attnc_rt)
  configure_file(cmake/${pc}.pc.in ${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

install(FILES docs/attnc.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
# Debian's python3 searches <prefix>/lib/python3/dist-packages (/usr and /usr/local)
install(DIRECTORY python/attnc DESTINATION lib/python3/dist-packages
  PATTERN __pycache__ EXCLUDE)
