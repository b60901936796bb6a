/*
 * The plugin ABI adapter: the berth_host_t table handed to every plugin's load(). host.c is
 * the only file that implements it; it calls the conn, relay and outbound APIs.
 */
#ifndef BERTH_HOST_H
#define BERTH_HOST_H

#include "berth/handler.h"

extern const berth_host_t berth_host_table;

#endif
