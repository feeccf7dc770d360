# kube-proxy-ts container image: build with the dev dependencies, run with production ones only.
# The runtime stage installs the kernel tools with scripts/install-deps.sh, the same step CI runs.

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY scripts/bundle.mjs ./scripts/bundle.mjs
RUN npm run build

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

FROM node:20-bookworm-slim
COPY scripts/install-deps.sh /usr/local/lib/kube-proxy-ts/install-deps.sh
RUN bash /usr/local/lib/kube-proxy-ts/install-deps.sh && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
# kube-proxy is the name upstream manifests run (kubeadm: /usr/local/bin/kube-proxy), so only the image changes.
RUN ln -s /app/dist/src/cli/kube-proxy-ts.js /usr/local/bin/kube-proxy-ts \
 && ln -s /app/dist/src/cli/kube-proxy-ts.js /usr/local/bin/kube-proxy
ENTRYPOINT ["kube-proxy-ts"]
