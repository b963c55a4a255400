# The Go client (clients/go): go vet and go test against the cbd built here,
# and go vet of its benchmarks (bench/clients/go_overhead, go_mirror) so that
# they keep compiling. Standard library only: GOPROXY=off and -mod=mod make sure
# nothing is fetched, and the build cache and GOPATH live in the build tree
# (CI runs as root on a fresh machine, with no usable home directory).
find_program(CBD_GO go)
if(CBD_GO)
  add_test(NAME go.client
           COMMAND sh -c "\"${CBD_GO}\" vet ./... && \"${CBD_GO}\" test -count=1 ./... && cd \"${PROJECT_SOURCE_DIR}/bench/clients/go_overhead\" && \"${CBD_GO}\" vet ./... && cd \"${PROJECT_SOURCE_DIR}/bench/clients/go_mirror\" && \"${CBD_GO}\" vet ./..."
           WORKING_DIRECTORY ${CMAKE_CURRENT_LIST_DIR})
  set_tests_properties(go.client PROPERTIES
    ENVIRONMENT "CBD_BUILD_DIR=${PROJECT_BINARY_DIR};GOCACHE=${PROJECT_BINARY_DIR}/go-cache/build;GOPATH=${PROJECT_BINARY_DIR}/go-cache/path;GOFLAGS=-mod=mod;GOPROXY=off;GOTOOLCHAIN=local;GOTELEMETRY=off"
    TIMEOUT 300)
else()
  message(WARNING "go not found: the Go client's tests will not run")
endif()
