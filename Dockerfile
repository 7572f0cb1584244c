# syntax=docker/dockerfile:1
# One image for every Hypha role: `hypha agent`, `hypha ca`, `hypha waypoint` and the operator verbs.
#   docker build -t hypha:dev .
# NODE_IMAGE swaps the base for a local one with Node 24 in /usr/local (same layout as node:24-slim);
# `bash manifests/image/build.sh` uses that on machines that cannot pull from a registry.
#
# builder: full npm install, the N-API addon (node-gyp against the image's own Node headers) and
#          the TypeScript builds.
# runtime: node:24-slim with production dependencies, the built JavaScript and the addon, plus the
#          two system tools node-mode capture calls (nft, ip). Runs as uid 10001 by default; the
#          agent DaemonSet overrides to root with only NET_ADMIN (see manifests/base/agent.yaml).

ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Build the addon against the headers shipped in the image instead of downloading them.
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json .npmrc ./
COPY shared/package.json shared/
COPY agent/package.json agent/
COPY waypoint/package.json waypoint/
COPY test/package.json test/
COPY bench/package.json bench/
# Scripts off: the root `prepare` would build before the sources are copied, and the pinned
# `node` dev dependency is only for developer machines (the image already has Node 24).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.base.json tsconfig.json turbo.json ./
COPY shared shared
COPY test test
COPY waypoint waypoint
COPY agent agent
# The agent's `install` script is `node-gyp rebuild -C native`; npm supplies node-gyp.
RUN npm run install -w @hypha/agent \
 && node_modules/.bin/tsc -p shared \
 && node_modules/.bin/tsc -p test \
 && node_modules/.bin/tsc -p waypoint \
 && node_modules/.bin/tsc -p agent \
 && node agent/ui/build.mjs

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY shared/package.json shared/
COPY agent/package.json agent/
COPY waypoint/package.json waypoint/
COPY test/package.json test/
COPY bench/package.json bench/
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hypha \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hypha
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules node_modules
COPY --from=deps /app/package.json ./
COPY --from=builder /src/shared/package.json shared/
COPY --from=builder /src/shared/dist shared/dist
COPY --from=builder /src/waypoint/package.json waypoint/
COPY --from=builder /src/waypoint/dist waypoint/dist
COPY --from=builder /src/agent/package.json agent/
COPY --from=builder /src/agent/bin agent/bin
COPY --from=builder /src/agent/dist agent/dist
COPY --from=builder /src/agent/native/build/Release/hypha_native.node agent/native/build/Release/hypha_native.node
COPY manifests manifests
USER 10001:10001
EXPOSE 15001 15006 15008 15012 15020 15021
ENTRYPOINT ["node", "agent/bin/hypha.js"]
CMD ["--help"]
