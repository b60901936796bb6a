/* <berth/handler.h> alone must compile warning-free as C11 (tests/CMakeLists.txt). */
#include <berth/handler.h>
