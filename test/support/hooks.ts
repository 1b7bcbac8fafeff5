/**
 * Mocha root hooks (loaded by .mocharc.json's `require`): after every test, whatever it opened
 * through onCleanup is closed, even when the test failed.
 */
import { runCleanups } from './helpers';

export const mochaHooks = {
  afterEach: runCleanups,
};
