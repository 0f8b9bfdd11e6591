// remote_segment: segment a NIfTI volume with clicks on a libsam3d Triton server (serve/triton),
// from C++ without Python. It speaks Triton's HTTP/REST protocol (KServe v2) with its binary
// tensor data extension through libcurl; the session protocol is the one in python/sam3d/wire.py
// (one Triton sequence = one libsam3d session; python/sam3d/remote.py is the Python client).
//
// The volume travels once, at the start; each click then receives only the packed bits of the box
// its answer changed, which this program writes into its own copy of the whole mask. At the end the
// server writes the mask as a .nii.gz with the volume's geometry and this program saves it.
//
// Build (C++17 and libcurl, nothing else):
//   c++ -std=c++17 -O2 -Wall -Wextra -Werror examples/triton/remote_segment.cpp -lcurl -o remote_segment
// Run against a server (python serve/triton/launch.py --model sam3d=models/demo-lesion):
//   ./remote_segment --server 127.0.0.1:8000 --input examples/data/sample_ct_lesion.nii.gz
//       --click 95,96,11 --click 100,96,11 --out mask.nii.gz [--raw mask.raw]   (one line)
//
// Exit status: 0 the mask was written (also when it is empty), 1 the server or the connection
// failed (the message says which), 2 the command line is wrong.
#include <curl/curl.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

const char* const USAGE =
    "usage: remote_segment --server HOST:PORT [--model NAME] --input VOLUME.nii[.gz]\n"
    "                      --click X,Y,Z[,+|-] [--click ...] [--object-per-click]\n"
    "                      --out MASK.nii.gz [--raw MASK.raw] [--coord ijk|lps|ras] [--timeout S]\n"
    "\n"
    "  --server HOST:PORT   the Triton server's HTTP endpoint (an http:// prefix is accepted)\n"
    "  --model NAME         the model in the server's repository (default sam3d)\n"
    "  --input FILE         the volume, a NIfTI file (.nii or .nii.gz); sent once, at the start\n"
    "  --click X,Y,Z[,+|-]  a click, positive (+, the default) or negative (-); repeatable, in order\n"
    "  --object-per-click   each click segments an object of its own (several structures); --out and\n"
    "                       --raw then name one file per object, its click's number before the\n"
    "                       extension (mask.nii.gz -> mask-1.nii.gz, mask-2.nii.gz, ...)\n"
    "  --out FILE           the mask as a uint8 NIfTI file, written by the server with the volume's\n"
    "                       geometry\n"
    "  --raw FILE           also the mask as this program holds it: one byte per voxel (0/1), i fastest\n"
    "  --coord ijk|lps|ras  what --click means: voxel index (default), LPS or RAS millimetres\n"
    "  --timeout S          seconds to wait for one reply (default 600)\n";

// ---------------------------------------------------------------------------------------------
// Failures. `Failure` ends the run with exit status 1; `transport` marks a failure to reach the
// server, after which sending END is pointless.

struct Failure {
    std::string message;
    bool transport = false;
};

struct UsageError {
    std::string message;
};

[[noreturn]] void fail(const std::string& message) { throw Failure{message, false}; }

// ---------------------------------------------------------------------------------------------
// A small JSON reader: enough for Triton's response header, its error body and the INFO tensor.
// It accepts standard JSON and rejects anything else, with a nesting limit so a hostile reply
// cannot exhaust the stack.

struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    bool boolean = false;
    double number = 0.0;
    bool integral = false;      // the number was written without fraction or exponent
    long long integer = 0;      // its exact value when integral and in range
    std::string text;
    std::vector<Json> items;             // Array elements, or Object values
    std::vector<std::string> keys;       // Object keys, parallel to items

    const Json* get(const std::string& key) const {
        if (kind != Object) return nullptr;
        for (size_t i = 0; i < keys.size(); ++i)
            if (keys[i] == key) return &items[i];
        return nullptr;
    }
    // an integer value in [lo, hi], or false
    bool as_int(long long lo, long long hi, long long& out) const {
        if (kind != Number || !integral || integer < lo || integer > hi) return false;
        out = integer;
        return true;
    }
};

class JsonParser {
  public:
    JsonParser(const char* data, size_t size) : p_(data), end_(data + size) {}

    bool parse(Json& out) {
        if (!value(out, 0)) return false;
        skip_space();
        return p_ == end_;
    }

  private:
    static constexpr int MAX_DEPTH = 64;
    const char* p_;
    const char* end_;

    void skip_space() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }
    bool literal(const char* word) {
        size_t n = std::strlen(word);
        if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
        p_ += n;
        return true;
    }
    bool value(Json& out, int depth) {
        if (depth > MAX_DEPTH) return false;
        skip_space();
        if (p_ >= end_) return false;
        switch (*p_) {
            case '{': return object(out, depth);
            case '[': return array(out, depth);
            case '"': out.kind = Json::String; return string(out.text);
            case 't': out.kind = Json::Bool; out.boolean = true; return literal("true");
            case 'f': out.kind = Json::Bool; out.boolean = false; return literal("false");
            case 'n': out.kind = Json::Null; return literal("null");
            default: return number(out);
        }
    }
    bool object(Json& out, int depth) {
        out.kind = Json::Object;
        ++p_;  // '{'
        skip_space();
        if (p_ < end_ && *p_ == '}') { ++p_; return true; }
        for (;;) {
            skip_space();
            std::string key;
            if (p_ >= end_ || *p_ != '"' || !string(key)) return false;
            skip_space();
            if (p_ >= end_ || *p_ != ':') return false;
            ++p_;
            Json v;
            if (!value(v, depth + 1)) return false;
            out.keys.push_back(std::move(key));
            out.items.push_back(std::move(v));
            skip_space();
            if (p_ >= end_) return false;
            if (*p_ == ',') { ++p_; continue; }
            if (*p_ == '}') { ++p_; return true; }
            return false;
        }
    }
    bool array(Json& out, int depth) {
        out.kind = Json::Array;
        ++p_;  // '['
        skip_space();
        if (p_ < end_ && *p_ == ']') { ++p_; return true; }
        for (;;) {
            Json v;
            if (!value(v, depth + 1)) return false;
            out.items.push_back(std::move(v));
            skip_space();
            if (p_ >= end_) return false;
            if (*p_ == ',') { ++p_; continue; }
            if (*p_ == ']') { ++p_; return true; }
            return false;
        }
    }
    static void put_utf8(std::string& s, unsigned long c) {
        if (c < 0x80) {
            s += static_cast<char>(c);
        } else if (c < 0x800) {
            s += static_cast<char>(0xC0 | (c >> 6));
            s += static_cast<char>(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            s += static_cast<char>(0xE0 | (c >> 12));
            s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
            s += static_cast<char>(0x80 | (c & 0x3F));
        } else {
            s += static_cast<char>(0xF0 | (c >> 18));
            s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
            s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
            s += static_cast<char>(0x80 | (c & 0x3F));
        }
    }
    bool hex4(unsigned long& out) {
        if (end_ - p_ < 4) return false;
        out = 0;
        for (int i = 0; i < 4; ++i, ++p_) {
            char c = *p_;
            out <<= 4;
            if (c >= '0' && c <= '9') out |= static_cast<unsigned long>(c - '0');
            else if (c >= 'a' && c <= 'f') out |= static_cast<unsigned long>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') out |= static_cast<unsigned long>(c - 'A' + 10);
            else return false;
        }
        return true;
    }
    bool string(std::string& out) {
        ++p_;  // '"'
        while (p_ < end_) {
            char c = *p_++;
            if (c == '"') return true;
            if (static_cast<unsigned char>(c) < 0x20) return false;
            if (c != '\\') { out += c; continue; }
            if (p_ >= end_) return false;
            char e = *p_++;
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned long c1 = 0;
                    if (!hex4(c1)) return false;
                    // a surrogate pair spells one code point above U+FFFF
                    if (c1 >= 0xD800 && c1 < 0xDC00 && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
                        const char* back = p_;
                        p_ += 2;
                        unsigned long c2 = 0;
                        if (hex4(c2) && c2 >= 0xDC00 && c2 < 0xE000) {
                            c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
                        } else {
                            p_ = back;
                        }
                    }
                    put_utf8(out, c1);
                    break;
                }
                default: return false;
            }
        }
        return false;
    }
    bool number(Json& out) {
        const char* start = p_;
        if (p_ < end_ && *p_ == '-') ++p_;
        const char* digits = p_;
        while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        if (p_ == digits) return false;
        bool integral = true;
        if (p_ < end_ && *p_ == '.') {
            integral = false;
            ++p_;
            const char* frac = p_;
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            if (p_ == frac) return false;
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            integral = false;
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            const char* exp = p_;
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            if (p_ == exp) return false;
        }
        std::string s(start, p_);
        out.kind = Json::Number;
        out.number = std::strtod(s.c_str(), nullptr);
        out.integral = false;
        if (integral) {
            errno = 0;
            long long v = std::strtoll(s.c_str(), nullptr, 10);
            if (errno == 0) {
                out.integral = true;
                out.integer = v;
            }
        }
        return true;
    }
};

bool parse_json(const char* data, size_t size, Json& out) { return JsonParser(data, size).parse(out); }

// ---------------------------------------------------------------------------------------------
// Little-endian encoding of the binary tensors (the wire is little-endian whatever this host is).

void put_le(std::string& out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint64_t get_le(const unsigned char* p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Requests: each input has shape [1, n] (the model batches sequences, never the data of one).

struct Input {
    std::string name, datatype;
    uint64_t count = 0;   // elements after the batch dimension
    std::string data;     // the binary tensor
};

Input bytes_input(const std::string& name, const std::string& value) {
    if (value.size() > 0xFFFFFFFFull) fail(name + " is too large for one BYTES element (4 GiB)");
    Input in{name, "BYTES", 1, {}};
    in.data.reserve(4 + value.size());
    put_le(in.data, value.size(), 4);   // BYTES elements: a 4-byte length, then the bytes
    in.data += value;
    return in;
}

Input fp64_input(const std::string& name, const std::vector<double>& values) {
    Input in{name, "FP64", values.size(), {}};
    for (double v : values) {
        uint64_t bits;
        std::memcpy(&bits, &v, sizeof bits);
        put_le(in.data, bits, 8);
    }
    return in;
}

Input uint32_input(const std::string& name, uint32_t value) {
    Input in{name, "UINT32", 1, {}};
    put_le(in.data, value, 4);
    return in;
}

Input bool_input(const std::string& name, bool value) {
    Input in{name, "BOOL", 1, {}};
    in.data += static_cast<char>(value ? 1 : 0);
    return in;
}

const char* const OUTPUT_NAMES[] = {"STATUS", "MESSAGE", "RESULT", "ZOOM", "PATCH", "INFO"};

// ---------------------------------------------------------------------------------------------
// Replies.

struct Output {
    std::string name, datatype;
    std::vector<long long> shape;
    size_t offset = 0, size = 0;   // the binary blob within the body
};

struct Reply {
    std::string body;
    std::vector<Output> outputs;
    std::string status, message;
    long long result[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    Json info;

    const Output* find(const std::string& name) const {
        for (const auto& o : outputs)
            if (o.name == name) return &o;
        return nullptr;
    }
    const Output& need(const std::string& name) const {
        const Output* o = find(name);
        if (!o) fail("malformed reply: no output " + name);
        return *o;
    }
    const unsigned char* bytes(const Output& o) const {
        return reinterpret_cast<const unsigned char*>(body.data()) + o.offset;
    }
    // element count of an output, checked against overflow
    static uint64_t elements(const Output& o) {
        uint64_t n = 1;
        for (long long d : o.shape) {
            if (d < 0) fail("malformed reply: " + o.name + " has a negative dimension");
            if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
                fail("malformed reply: " + o.name + "'s shape overflows");
            n *= static_cast<uint64_t>(d);
        }
        return n;
    }
    // the elements of a BYTES output (each a 4-byte length and its bytes)
    std::vector<std::string> strings(const std::string& name) const {
        const Output& o = need(name);
        if (o.datatype != "BYTES") fail("malformed reply: " + name + " is " + o.datatype + ", not BYTES");
        uint64_t n = elements(o);
        if (n > o.size / 4) fail("malformed reply: " + name + " holds fewer bytes than its shape needs");
        std::vector<std::string> out;
        const unsigned char* p = bytes(o);
        size_t pos = 0;
        for (uint64_t i = 0; i < n; ++i) {
            if (o.size - pos < 4) fail("malformed reply: " + name + " ends inside an element's length");
            uint64_t len = get_le(p + pos, 4);
            pos += 4;
            if (len > o.size - pos) fail("malformed reply: " + name + " ends inside an element");
            out.emplace_back(reinterpret_cast<const char*>(p + pos), static_cast<size_t>(len));
            pos += static_cast<size_t>(len);
        }
        if (pos != o.size) fail("malformed reply: " + name + " holds bytes beyond its elements");
        return out;
    }
    std::string string1(const std::string& name) const {
        auto v = strings(name);
        if (v.size() != 1) fail("malformed reply: " + name + " holds " + std::to_string(v.size()) + " elements, not 1");
        return v[0];
    }
    // a fixed-size output's blob, checked against its datatype and shape
    const unsigned char* fixed(const std::string& name, const char* datatype, size_t item, uint64_t& count) const {
        const Output& o = need(name);
        if (o.datatype != datatype) fail("malformed reply: " + name + " is " + o.datatype + ", not " + datatype);
        count = elements(o);
        if (count > o.size / item || count * item != o.size)
            fail("malformed reply: " + name + " holds " + std::to_string(o.size) + " bytes for " +
                 std::to_string(count) + " elements");
        return bytes(o);
    }
};

// The response body: a JSON header of Inference-Header-Content-Length bytes, then the binary
// blobs of the outputs in the header's order.
void parse_reply(Reply& r, long long header_length) {
    const std::string& body = r.body;
    size_t hlen = body.size();
    if (header_length >= 0) {
        if (static_cast<unsigned long long>(header_length) > body.size())
            fail("malformed reply: its JSON header is longer than the reply");
        hlen = static_cast<size_t>(header_length);
    }
    Json header;
    if (!parse_json(body.data(), hlen, header) || header.kind != Json::Object)
        fail("malformed reply: its header is not a JSON object");
    const Json* outs = header.get("outputs");
    if (!outs || outs->kind != Json::Array) fail("malformed reply: no outputs");
    size_t offset = hlen;
    for (const Json& o : outs->items) {
        Output out;
        const Json* name = o.get("name");
        const Json* datatype = o.get("datatype");
        const Json* shape = o.get("shape");
        if (!name || name->kind != Json::String || !datatype || datatype->kind != Json::String || !shape ||
            shape->kind != Json::Array)
            fail("malformed reply: an output without name, datatype or shape");
        out.name = name->text;
        out.datatype = datatype->text;
        for (const Json& d : shape->items) {
            long long v = 0;
            if (!d.as_int(0, std::numeric_limits<long long>::max(), v))
                fail("malformed reply: " + out.name + "'s shape is not made of counts");
            out.shape.push_back(v);
        }
        const Json* params = o.get("parameters");
        const Json* size = params ? params->get("binary_data_size") : nullptr;
        long long n = 0;
        if (!size || !size->as_int(0, std::numeric_limits<long long>::max(), n))
            fail("malformed reply: output " + out.name + " came without binary data");
        if (static_cast<unsigned long long>(n) > body.size() - offset)
            fail("malformed reply: output " + out.name + " runs past the end of the reply");
        out.offset = offset;
        out.size = static_cast<size_t>(n);
        offset += out.size;
        r.outputs.push_back(std::move(out));
    }
    if (offset != body.size()) fail("malformed reply: bytes beyond its outputs");

    r.status = r.string1("STATUS");
    r.message = r.string1("MESSAGE");
    uint64_t count = 0;
    const unsigned char* res = r.fixed("RESULT", "INT64", 8, count);
    if (count != 8) fail("malformed reply: RESULT holds " + std::to_string(count) + " values, not 8");
    for (int i = 0; i < 8; ++i) r.result[i] = static_cast<long long>(get_le(res + 8 * i, 8));
    std::string info = r.string1("INFO");
    if (!parse_json(info.data(), info.size(), r.info) || r.info.kind != Json::Object)
        fail("malformed reply: INFO is not a JSON object");
}

// ---------------------------------------------------------------------------------------------
// The connection: one curl handle, kept alive across the session's requests.

size_t on_body(char* data, size_t size, size_t n, void* user) {
    auto* body = static_cast<std::string*>(user);
    body->append(data, size * n);
    return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* length = static_cast<long long*>(user);
    std::string line(data, size * n);
    const std::string key = "inference-header-content-length:";
    if (line.size() > key.size()) {
        std::string head = line.substr(0, key.size());
        for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (head == key) {
            std::string v = line.substr(key.size());
            char* end = nullptr;
            errno = 0;
            long long x = std::strtoll(v.c_str(), &end, 10);
            while (end && (*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t')) ++end;
            // a value that is not a count is remembered as such and refused by parse_reply
            *length = (errno == 0 && end && *end == '\0' && x >= 0) ? x : -2;
        }
    }
    return size * n;
}

class Client {
  public:
    Client(const std::string& server, const std::string& model, long timeout_s) {
        curl_ = curl_easy_init();
        if (!curl_) fail("libcurl could not start");
        std::string host = server;
        if (host.rfind("http://", 0) == 0) host = host.substr(7);
        while (!host.empty() && host.back() == '/') host.pop_back();
        base_ = "http://" + host;
        char* m = curl_easy_escape(curl_, model.c_str(), static_cast<int>(model.size()));
        if (!m) {
            curl_easy_cleanup(curl_);
            fail("libcurl could not escape the model name");
        }
        url_ = base_ + "/v2/models/" + m + "/infer";
        curl_free(m);
        timeout_s_ = timeout_s;
    }
    ~Client() { curl_easy_cleanup(curl_); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    const std::string& server() const { return base_; }

    // One request of the sequence `cid`; the reply parsed. Throws Failure on a transport error,
    // an HTTP error (Triton's own message) or a malformed reply; a library error is in r.status.
    Reply infer(uint64_t cid, bool start, bool end, const std::vector<Input>& inputs) {
        std::ostringstream h;
        h << "{\"parameters\":{\"sequence_id\":" << cid << ",\"sequence_start\":" << (start ? "true" : "false")
          << ",\"sequence_end\":" << (end ? "true" : "false") << "},\"inputs\":[";
        size_t data_size = 0;
        for (size_t i = 0; i < inputs.size(); ++i) {
            const Input& in = inputs[i];
            h << (i ? "," : "") << "{\"name\":\"" << json_escape(in.name) << "\",\"datatype\":\"" << in.datatype
              << "\",\"shape\":[1," << in.count << "],\"parameters\":{\"binary_data_size\":" << in.data.size()
              << "}}";
            data_size += in.data.size();
        }
        h << "],\"outputs\":[";
        bool first = true;
        for (const char* name : OUTPUT_NAMES) {
            h << (first ? "" : ",") << "{\"name\":\"" << name << "\",\"parameters\":{\"binary_data\":true}}";
            first = false;
        }
        h << "]}";
        const std::string header = h.str();
        std::string body;
        body.reserve(header.size() + data_size);
        body += header;
        for (const Input& in : inputs) body += in.data;

        Reply r;
        long long header_length = -1;
        struct curl_slist* headers = nullptr;
        headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
        headers = curl_slist_append(headers, ("Inference-Header-Content-Length: " + std::to_string(header.size())).c_str());
        // no "Expect: 100-continue" round trip before a large volume
        headers = curl_slist_append(headers, "Expect:");
        curl_easy_reset(curl_);
        curl_easy_setopt(curl_, CURLOPT_URL, url_.c_str());
        curl_easy_setopt(curl_, CURLOPT_POST, 1L);
        curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
        curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &r.body);
        curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &header_length);
        curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(curl_, CURLOPT_TIMEOUT, timeout_s_);
        CURLcode rc = curl_easy_perform(curl_);
        curl_slist_free_all(headers);
        if (rc != CURLE_OK)
            throw Failure{"no answer from the server at " + base_ + ": " + curl_easy_strerror(rc), true};
        long http = 0;
        curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &http);
        if (http != 200) {
            // Triton's own refusals (unknown model, a sequence it does not know, a malformed
            // request) come as {"error": "..."}
            std::string why = "HTTP " + std::to_string(http);
            Json err;
            const Json* e = nullptr;
            if (parse_json(r.body.data(), r.body.size(), err) && (e = err.get("error")) && e->kind == Json::String)
                why += ": " + e->text;
            else if (!r.body.empty())
                why += ": " + r.body.substr(0, 500);
            fail("the server at " + base_ + " refused the request (" + why + ")");
        }
        if (header_length == -2) fail("malformed reply: its Inference-Header-Content-Length is not a count");
        parse_reply(r, header_length);
        return r;
    }

  private:
    CURL* curl_ = nullptr;
    std::string base_, url_;
    long timeout_s_ = 600;
};

// ---------------------------------------------------------------------------------------------
// The command line.

struct Click {
    double x = 0, y = 0, z = 0;
    bool positive = true;
};

struct Args {
    std::string server, model = "sam3d", input, out, raw, coord = "ijk";
    std::vector<Click> clicks;
    bool object_per_click = false;
    long timeout_s = 600;
};

bool parse_double(const std::string& s, double& out) {
    if (s.empty()) return false;
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return end && *end == '\0' && std::isfinite(out);
}

Click parse_click(const std::string& s) {
    std::vector<std::string> parts;
    size_t pos = 0;
    for (;;) {
        size_t comma = s.find(',', pos);
        parts.push_back(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    Click c;
    if ((parts.size() != 3 && parts.size() != 4) || !parse_double(parts[0], c.x) || !parse_double(parts[1], c.y) ||
        !parse_double(parts[2], c.z))
        throw UsageError{"--click " + s + ": expected X,Y,Z or X,Y,Z,+ or X,Y,Z,-"};
    if (parts.size() == 4) {
        if (parts[3] == "+") c.positive = true;
        else if (parts[3] == "-") c.positive = false;
        else throw UsageError{"--click " + s + ": the label after X,Y,Z is + or -"};
    }
    return c;
}

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw UsageError{k + " needs a value"};
            return argv[++i];
        };
        if (k == "--server") a.server = value();
        else if (k == "--model") a.model = value();
        else if (k == "--input") a.input = value();
        else if (k == "--click") a.clicks.push_back(parse_click(value()));
        else if (k == "--object-per-click") a.object_per_click = true;
        else if (k == "--out") a.out = value();
        else if (k == "--raw") a.raw = value();
        else if (k == "--coord") {
            a.coord = value();
            if (a.coord != "ijk" && a.coord != "lps" && a.coord != "ras")
                throw UsageError{"--coord " + a.coord + ": one of ijk, lps, ras"};
        } else if (k == "--timeout") {
            double t = 0;
            if (!parse_double(value(), t) || t < 1 || t > 86400) throw UsageError{"--timeout: seconds, 1 to 86400"};
            a.timeout_s = static_cast<long>(t);
        } else if (k == "-h" || k == "--help") {
            std::cout << USAGE;
            std::exit(0);
        } else {
            throw UsageError{"unknown argument " + k};
        }
    }
    if (a.server.empty()) throw UsageError{"--server is required"};
    if (a.input.empty()) throw UsageError{"--input is required"};
    if (a.out.empty()) throw UsageError{"--out is required"};
    if (a.clicks.empty()) throw UsageError{"at least one --click is required"};
    if (a.model.empty()) throw UsageError{"--model is empty"};
    return a;
}

// ---------------------------------------------------------------------------------------------
// Files.

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot open " + path + ": " + std::strerror(errno));
    std::ostringstream s;
    s << f.rdbuf();
    if (f.bad()) fail("cannot read " + path);
    std::string data = s.str();
    if (data.empty()) fail(path + " is empty");
    return data;
}

// Written beside the destination and renamed, so the file appears complete or not at all.
void write_file_atomically(const std::string& path, const unsigned char* data, size_t size) {
    std::string tmp = path + ".part-" + std::to_string(static_cast<long>(getpid()));
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail("cannot write " + tmp + ": " + std::strerror(errno));
    bool ok = (size == 0 || std::fwrite(data, 1, size, f) == size);
    ok = (std::fclose(f) == 0) && ok;
    if (!ok) {
        std::remove(tmp.c_str());
        fail("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        std::remove(tmp.c_str());
        fail("cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
    }
}

// mask.nii.gz -> mask-2.nii.gz: one file per object with --object-per-click
std::string numbered(const std::string& path, size_t n) {
    size_t slash = path.find_last_of('/');
    size_t name = slash == std::string::npos ? 0 : slash + 1;
    size_t dot = std::string::npos;
    for (const char* ext : {".nii.gz", ".nii", ".raw"}) {
        size_t len = std::strlen(ext);
        if (path.size() - name > len && path.compare(path.size() - len, len, ext) == 0) {
            dot = path.size() - len;
            break;
        }
    }
    if (dot == std::string::npos) {
        size_t d = path.find_last_of('.');
        if (d != std::string::npos && d > name) dot = d;
    }
    if (dot == std::string::npos) return path + "-" + std::to_string(n);
    return path.substr(0, dot) + "-" + std::to_string(n) + path.substr(dot);
}

// ---------------------------------------------------------------------------------------------
// The session.

struct Object {
    uint32_t id = 0;
    std::vector<uint8_t> mask;   // the whole mask, one byte per voxel, i fastest
    uint64_t voxels = 0;         // non-zero voxels in mask
};

class Session {
  public:
    Session(Client& client, uint64_t cid) : client_(client), cid_(cid) {}

    // Sends OP with its inputs; fails with the library's status unless it is SAM3D_STATUS_OK.
    Reply call(const std::string& op, std::vector<Input> inputs, bool start = false, bool end = false) {
        inputs.insert(inputs.begin(), bytes_input("OP", op));
        if (start) started_ = true;
        Reply r = client_.infer(cid_, start, end, inputs);
        if (end) started_ = false;
        if (r.status != "SAM3D_STATUS_OK") fail(r.status + ": " + r.message);
        return r;
    }

    // Ends the sequence on the server after a failure, when one was started: a refused START
    // still holds a sequence slot until its END. Its own errors change nothing for the caller.
    void end_quietly() {
        if (!started_) return;
        started_ = false;
        try {
            client_.infer(cid_, false, true, {bytes_input("OP", "end")});
        } catch (const Failure&) {
        }
    }

  private:
    Client& client_;
    uint64_t cid_;
    bool started_ = false;
};

// Writes a mask reply's packed bits into the box [lo, hi) of `mask` (dims, i fastest): the box's
// voxels in index order with i fastest, the first voxel in the lowest bit of the first byte.
// Keeps obj.voxels up to date from the box alone, so the reply's voxel count can be checked
// without a pass over the whole volume.
void apply_patch(const Reply& r, const long long dims[3], Object& obj) {
    std::vector<uint8_t>& mask = obj.mask;
    long long lo[3], hi[3];
    uint64_t box = 1;
    for (int a = 0; a < 3; ++a) {
        lo[a] = r.result[1 + a];
        hi[a] = r.result[4 + a];
        if (lo[a] < 0 || hi[a] > dims[a] || lo[a] > hi[a])
            fail("malformed reply: its changed box lies outside the volume");
        box *= static_cast<uint64_t>(hi[a] - lo[a]);
    }
    uint64_t count = 0;
    const unsigned char* bits = r.fixed("PATCH", "UINT8", 1, count);
    if (count != (box + 7) / 8)
        fail("malformed reply: PATCH holds " + std::to_string(count) + " bytes for a box of " + std::to_string(box) +
             " voxels");
    uint64_t b = 0;
    for (long long k = lo[2]; k < hi[2]; ++k)
        for (long long j = lo[1]; j < hi[1]; ++j) {
            size_t row = static_cast<size_t>((k * dims[1] + j) * dims[0]);
            for (long long i = lo[0]; i < hi[0]; ++i, ++b) {
                uint8_t& v = mask[row + static_cast<size_t>(i)];
                uint8_t now = static_cast<uint8_t>((bits[b >> 3] >> (b & 7)) & 1);
                obj.voxels = obj.voxels - v + now;
                v = now;
            }
        }
    // a lost or misplaced patch would otherwise leave this copy silently different from the server's
    if (r.result[0] < 0 || static_cast<uint64_t>(r.result[0]) != obj.voxels)
        fail("malformed reply: its patch disagrees with its voxel count (" + std::to_string(r.result[0]) + " there, " +
             std::to_string(obj.voxels) + " here)");
}

uint32_t object_id(const Reply& r) {
    const Json* o = r.info.get("object");
    long long v = 0;
    if (!o || !o->as_int(0, 0xFFFFFFFFll, v)) fail("malformed reply: add_object's INFO names no object");
    return static_cast<uint32_t>(v);
}

int run(const Args& a) {
    std::string volume = read_file(a.input);

    // a random 63-bit correlation ID, never 0 (Triton reads 0 as "no sequence")
    std::random_device rd;
    uint64_t cid = ((static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd())) & 0x7FFFFFFFFFFFFFFFull;
    if (cid == 0) cid = 1;

    Client client(a.server, a.model, a.timeout_s);
    Session session(client, cid);
    try {
        Reply started = session.call("start", {bytes_input("VOLUME", volume)}, true);
        volume = std::string();   // sent: free it before the masks
        const Json* d = started.info.get("dims");
        long long dims[3] = {0, 0, 0};
        uint64_t voxels = 1;
        if (!d || d->kind != Json::Array || d->items.size() != 3) fail("malformed reply: INFO has no dims");
        for (int i = 0; i < 3; ++i) {
            if (!d->items[i].as_int(1, 1ll << 31, dims[i])) fail("malformed reply: INFO's dims are not counts");
            voxels *= static_cast<uint64_t>(dims[i]);
        }
        // libsam3d's default budget for one whole-volume array: a reply claiming more is not believed
        if (voxels > (1ull << 32)) fail("the volume's dims are too large to hold its mask here");

        std::vector<Object> objects;
        auto add_object = [&]() {
            Reply r = session.call("add_object", {});
            objects.push_back(Object{object_id(r), std::vector<uint8_t>(static_cast<size_t>(voxels), 0), 0});
        };
        if (!a.object_per_click) add_object();
        for (size_t n = 0; n < a.clicks.size(); ++n) {
            if (a.object_per_click) add_object();
            Object& obj = objects.back();
            const Click& c = a.clicks[n];
            Reply r = session.call("click", {uint32_input("OBJECT", obj.id), fp64_input("POINT", {c.x, c.y, c.z}),
                                             bytes_input("COORD", a.coord), bool_input("POSITIVE", c.positive)});
            apply_patch(r, dims, obj);
            std::cout << "click " << n + 1 << ": " << r.result[0] << " voxels, changed [" << r.result[1] << ","
                      << r.result[2] << "," << r.result[3] << "]..[" << r.result[4] << "," << r.result[5] << ","
                      << r.result[6] << "), " << r.body.size() << " bytes on the wire" << std::endl;
            if (r.result[0] == 0) std::cerr << "the click found nothing: the mask is empty\n";
        }

        for (size_t n = 0; n < objects.size(); ++n) {
            Reply r = session.call("get_mask_nifti", {uint32_input("OBJECT", objects[n].id)});
            uint64_t size = 0;
            const unsigned char* file = r.fixed("PATCH", "UINT8", 1, size);
            if (size == 0) fail("malformed reply: get_mask_nifti returned no file");
            std::string out = a.object_per_click ? numbered(a.out, n + 1) : a.out;
            write_file_atomically(out, file, static_cast<size_t>(size));
            if (!a.raw.empty()) {
                std::string raw = a.object_per_click ? numbered(a.raw, n + 1) : a.raw;
                write_file_atomically(raw, objects[n].mask.data(), objects[n].mask.size());
            }
        }
        // the files are complete: a failed END only leaves the session to the server's idle timeout
        try {
            session.call("end", {}, false, true);
        } catch (const Failure& f) {
            std::cerr << "warning: ending the session failed (the server frees it after its idle timeout): "
                      << f.message << "\n";
        }
    } catch (const Failure& f) {
        if (!f.transport) session.end_quietly();
        throw;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Args args;
    try {
        args = parse_args(argc, argv);
    } catch (const UsageError& e) {
        std::cerr << "error: " << e.message << "\n" << USAGE;
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        std::cerr << "error: libcurl could not start\n";
        return 1;
    }
    int rc = 1;
    try {
        rc = run(args);
    } catch (const Failure& f) {
        std::cerr << "error: " << f.message << "\n";
    } catch (const std::bad_alloc&) {
        std::cerr << "error: out of memory\n";
    }
    curl_global_cleanup();
    return rc;
}
