import { ConfigError } from './errors';

/**
 * A client library loaded on first use, so importing tributary does not pay for it. When
 * the package itself is not installed (a pruned install, a bundle that left it out), the
 * error names it and what needs it; any other failure to load it is thrown as it is.
 */
export function loadPackage<T>(name: string, neededBy: string): T {
  try {
    return require(name) as T;
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && (error as Error).message.startsWith(`Cannot find module '${name}'`);
    if (!missing) throw error;
    throw new ConfigError(`${neededBy}: the ${name} package is not installed (npm install ${name})`);
  }
}
