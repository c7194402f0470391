import { defineConfig } from 'vite'

// Relative asset URLs: the same build is served at `https://{domain}/` and
// under `/dashboard/` on the API listener.
export default defineConfig({
  base: './',
  resolve: {
    // See the stub: the SDK's Dockerfile parser is dead code here.
    alias: {
      'dockerfile-ast': '/src/stubs/dockerfile-ast.ts',
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Source maps would double what the binary embeds.
    sourcemap: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
  },
})
