#!/usr/bin/env node
// Launcher for the `hypha` command; the code lives in the built dist/ (npm ci builds it).
import '../dist/cli/main.js';
