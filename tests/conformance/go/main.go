// Conformance sample for aws-lambda-go: one handler, three outcomes.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Mode  string `json:"mode"`
	Value any    `json:"value"`
}

type result struct {
	Ric                string `json:"ric"`
	Echo               any    `json:"echo"`
	RequestID          string `json:"requestId"`
	FunctionName       string `json:"functionName"`
	FunctionVersion    string `json:"functionVersion"`
	MemoryLimitInMB    int    `json:"memoryLimitInMB"`
	InvokedFunctionArn string `json:"invokedFunctionArn"`
	RemainingMs        int64  `json:"remainingMs"`
}

// ConformanceError is the handled error: aws-lambda-go reports its type name.
type ConformanceError struct{ msg string }

func (e *ConformanceError) Error() string { return e.msg }

func handler(ctx context.Context, ev event) (*result, error) {
	switch ev.Mode {
	case "error":
		return nil, &ConformanceError{fmt.Sprintf("handled: %v", ev.Value)}
	case "exit":
		fmt.Println("exiting mid-invocation")
		os.Exit(7)
	}
	lc, ok := lambdacontext.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("no lambda context")
	}
	deadline, _ := ctx.Deadline()
	return &result{
		Ric:                "go",
		Echo:               ev.Value,
		RequestID:          lc.AwsRequestID,
		FunctionName:       lambdacontext.FunctionName,
		FunctionVersion:    lambdacontext.FunctionVersion,
		MemoryLimitInMB:    lambdacontext.MemoryLimitInMB,
		InvokedFunctionArn: lc.InvokedFunctionArn,
		RemainingMs:        time.Until(deadline).Milliseconds(),
	}, nil
}

func main() {
	lambda.Start(handler)
}
