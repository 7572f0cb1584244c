#!/usr/bin/env -S node --external-memory-accounted-in-global-limit --initial-heap-size=64
// Launcher for the `hypha` command; the code lives in the built dist/ (npm ci builds it).
// The V8 flags above are MESH_NODE_FLAGS (@hypha/shared/hbone, runtime.ts, says why); a test keeps
// this line equal to that list.
import '../dist/cli/main.js';
