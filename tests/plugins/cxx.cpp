// cxx: a plugin written in C++ (g++ -std=c++20 -Wall -Wextra -pedantic -Werror), built with
// -fvisibility=hidden against the header alone: BERTH_HANDLER must export the descriptor with
// C linkage by itself. It declares an option of every type and replies with what the host
// parsed, and keeps an idle timer it re-arms with timer_restart on every read.
//
//   any line       -> "<greeting> <line>" (upper-cased with style = upper), `repeat` times
//   "opts"         -> one line: every option as the plugin received it
//   idle_close     -> after that long without a read: "bye after N restarts", then close
#include <berth/handler.h>

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <string>

namespace
{

const berth_host_t *host;

struct cxx_opts {
    const char *greeting;
    int upper;
    int64_t repeat;
    uint64_t idle_ms;
    uint64_t max_line;
    berth_cidr_list_t peers;
    const char *log_path;
    int style;
};

const char *const modes[] = {"plain", "upper", nullptr};

const berth_option_t cxx_options[] = {
    {.name = "greeting",
     .type = BERTH_OPT_STRING,
     .offset = offsetof(cxx_opts, greeting),
     .def = "hello",
     .help = "the word before each reply"},
    {.name = "shout",
     .type = BERTH_OPT_BOOL,
     .offset = offsetof(cxx_opts, upper),
     .def = "no",
     .help = "upper-case the greeting"},
    {.name = "repeat",
     .type = BERTH_OPT_INT,
     .offset = offsetof(cxx_opts, repeat),
     .def = "1",
     .min = 1,
     .max = 5,
     .help = "how many times each reply is sent"},
    {.name = "idle_close",
     .type = BERTH_OPT_DURATION,
     .offset = offsetof(cxx_opts, idle_ms),
     .def = "0",
     .help = "close after this long without a read (0: never)"},
    {.name = "max_line",
     .type = BERTH_OPT_SIZE,
     .offset = offsetof(cxx_opts, max_line),
     .def = "1K",
     .min = 16,
     .max = 1 << 20,
     .help = "the longest line echoed"},
    {.name = "peers",
     .type = BERTH_OPT_CIDR_LIST,
     .flags = BERTH_OPT_PORTS,
     .offset = offsetof(cxx_opts, peers),
     .help = "addresses, counted in the opts reply"},
    {.name = "log_path",
     .type = BERTH_OPT_PATH,
     .offset = offsetof(cxx_opts, log_path),
     .help = "a path, reported back"},
    {.name = "style",
     .type = BERTH_OPT_ENUM,
     .offset = offsetof(cxx_opts, style),
     .def = "plain",
     .choices = modes,
     .help = "plain or upper"},
    {},
};

struct conn_state {
    berth_timer_t *idle;
    unsigned restarts;
};

const cxx_opts &options_of(berth_conn_t *conn)
{
    return *static_cast<const cxx_opts *>(host->listener_options(host->listener(conn)));
}

int cxx_load(const berth_host_t *h)
{
    if (!BERTH_HOST_HAS(h, timer_restart))
        return -ENOTSUP;
    host = h;
    return 0;
}

void on_idle(berth_conn_t *conn, void *)
{
    auto *st = static_cast<conn_state *>(host->state(conn));
    st->idle = nullptr; // fired: gone
    std::string bye = "bye after " + std::to_string(st->restarts) + " restarts\n";
    host->write(conn, bye.data(), bye.size());
    host->close(conn);
}

int cxx_setup(berth_conn_t *conn)
{
    const cxx_opts &o = options_of(conn);
    auto *st = static_cast<conn_state *>(host->state(conn));
    if (o.idle_ms > 0 &&
        (st->idle = host->timer_start(conn, o.idle_ms, on_idle, nullptr)) == nullptr)
        return -ENOMEM;
    return 0;
}

std::string dump(const cxx_opts &o)
{
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "greeting=%s shout=%d repeat=%" PRId64 " idle_close=%" PRIu64 " max_line=%" PRIu64
                  " peers=%zu log_path=%s style=%s\n",
                  o.greeting, o.upper, o.repeat, o.idle_ms, o.max_line, o.peers.count,
                  o.log_path ? o.log_path : "(none)", modes[o.style]);
    return buf;
}

void cxx_handle(berth_conn_t *conn, const void *data, size_t len)
{
    const cxx_opts &o = options_of(conn);
    auto *st = static_cast<conn_state *>(host->state(conn));
    if (st->idle != nullptr && host->timer_restart(st->idle, o.idle_ms) == 0)
        st->restarts++;
    std::string line(static_cast<const char *>(data), len < o.max_line ? len : o.max_line);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
        line.pop_back();
    std::string reply;
    if (line == "opts") {
        reply = dump(o);
    } else {
        std::string greeting = o.greeting;
        if (o.upper)
            for (char &c : greeting)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (o.style == 1)
            for (char &c : line)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        for (int64_t i = 0; i < o.repeat; i++)
            reply += greeting + " " + line + "\n";
    }
    if (host->write(conn, reply.data(), reply.size()) < 0)
        host->abort(conn);
}

} // namespace

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("cxx"),
    .version = "2.5-cxx",
    .conn_size = sizeof(conn_state),
    .load = cxx_load,
    .setup = cxx_setup,
    .handle = cxx_handle,
    .options = cxx_options,
    .options_size = sizeof(cxx_opts),
};
