{
  "targets": [
    {
      "target_name": "hypha_native",
      "sources": ["src/hypha_native.c", "src/fd_passing.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
