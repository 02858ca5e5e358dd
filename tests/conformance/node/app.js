// Conformance sample for aws-lambda-ric: one handler, three outcomes.
class ConformanceError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConformanceError';
  }
}

exports.handler = async (event, context) => {
  if (event.mode === 'error') throw new ConformanceError(`handled: ${event.value}`);
  if (event.mode === 'exit') {
    console.log('exiting mid-invocation');
    process.exit(7);
  }
  return {
    ric: 'node',
    echo: event.value,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    memoryLimitInMB: Number(context.memoryLimitInMB),
    invokedFunctionArn: context.invokedFunctionArn,
    remainingMs: context.getRemainingTimeInMillis(),
  };
};
