// <berth/handler.h> alone must compile warning-free as C++20 (tests/CMakeLists.txt).
#include <berth/handler.h>
