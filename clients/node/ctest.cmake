# The Node client (clients/node): built with tsc and tested with node's own
# runner against the cbd built here. The consumer test (test/consumer.test.ts)
# also runs `npm pack` and an offline `npm install` of the tarball, so npm
# must be on the path, as it is for `npm ci`.
find_program(CBD_NPM npm)
if(CBD_NPM)
  add_test(NAME node.client
           COMMAND sh -c "npm ci --no-audit --no-fund --silent && npm run --silent build && npm test"
           WORKING_DIRECTORY ${CMAKE_CURRENT_LIST_DIR})
  # The tests take under a minute; the rest of the allowance is for npm ci
  # fetching the dev tooling (TypeScript, @types/node).
  set_tests_properties(node.client PROPERTIES
    ENVIRONMENT "CBD_BUILD_DIR=${PROJECT_BINARY_DIR}" TIMEOUT 900)
else()
  message(WARNING "npm not found: the Node client's tests will not run")
endif()
