/** @type {import('next').NextConfig} */
const nextConfig = {
  // The typed client is a linked TypeScript package (file:../../clients/typescript).
  transpilePackages: ["@tasks-api/client"],
  // No ESLint in this example; `npm run typecheck` and the build's type check cover it.
  eslint: { ignoreDuringBuilds: true },
  poweredByHeader: false,
  // The end-to-end test builds into its own folder, so that `next dev` here never clobbers it.
  distDir: process.env.NEXT_DIST_DIR || ".next",
};

export default nextConfig;
