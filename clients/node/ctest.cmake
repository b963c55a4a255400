# The Node client (clients/node): built with tsc and tested with node's own
# runner against the cbd built here.
find_program(CBD_NPM npm)
if(CBD_NPM)
  add_test(NAME node.client
           COMMAND sh -c "npm ci --no-audit --no-fund --silent && npm run --silent build && npm test"
           WORKING_DIRECTORY ${CMAKE_CURRENT_LIST_DIR})
  set_tests_properties(node.client PROPERTIES
    ENVIRONMENT "CBD_BUILD_DIR=${PROJECT_BINARY_DIR}" TIMEOUT 900)
else()
  message(WARNING "npm not found: the Node client's tests will not run")
endif()
