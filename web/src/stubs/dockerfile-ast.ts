// The SDK's template builder parses Dockerfiles with `dockerfile-ast` (and
// the language-server libraries it pulls in). The dashboard never builds
// templates, so the bundle gets this instead of ~100 kB it would not run.
export const DockerfileParser = {
  parse(): never {
    throw new Error('parsing Dockerfiles is not part of the dashboard')
  },
}
