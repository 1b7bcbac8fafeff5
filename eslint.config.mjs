// Lint: typescript-eslint's recommended-type-checked set over every TypeScript file.
// Formatting is Prettier's job (`npm run lint` runs both); nothing here restates it.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.cache/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  {
    // Tests pass async request handlers to node:http servers: a rejection there surfaces as
    // mocha's unhandled-rejection failure, which is what a test wants.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }] },
  },
  { files: ['**/*.mjs'], ...tseslint.configs.disableTypeChecked },
);
