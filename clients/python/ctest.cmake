# The Python client (clients/python): pytest with Debian's /usr/bin/python3
# (python3-pytest, python3-venv, python3-setuptools) against the cbd built
# here. The tests write nothing into the source tree: no bytecode, no
# pytest cache, and the pip install test builds from a copy.
set(CBD_SYSTEM_PYTHON /usr/bin/python3)
if(EXISTS ${CBD_SYSTEM_PYTHON})
  add_test(NAME python.client
           COMMAND ${CBD_SYSTEM_PYTHON} -m pytest -q -p no:cacheprovider tests
           WORKING_DIRECTORY ${CMAKE_CURRENT_LIST_DIR})
  set_tests_properties(python.client PROPERTIES
    ENVIRONMENT "CBD_BUILD_DIR=${PROJECT_BINARY_DIR};PYTHONDONTWRITEBYTECODE=1"
    TIMEOUT 300)
else()
  message(WARNING "${CBD_SYSTEM_PYTHON} not found: the Python client's tests will not run")
endif()
