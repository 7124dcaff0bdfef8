// FAvatarStreamClient: one almquist.v1.Conversation/Converse call kept open on background threads.
//
// Threads:
// - the connection thread (this FRunnable): waits for the channel, opens the call, writes SessionStart (with the
//   session id of the last SessionStarted, so a reconnect resumes the session), then blocks in Read. Each
//   ServerEvent is decoded there (AvatarLinkCore's StreamDecoder for avatar events) and posted to Inbound. When
//   the call ends it classifies the status and, unless it is final or Stop() was called, sleeps an exponential
//   backoff with jitter and starts over.
// - the writer thread: sends the turns and interrupts the game thread enqueued on Outbound. gRPC allows one
//   Write concurrently with one Read on a call, so a long read never delays a turn.
// - the game thread: SendText / Interrupt enqueue on Outbound; PollEvent dequeues Inbound; Start / Shutdown own
//   the threads. Both queues are lock-free MPSC TQueues: Outbound has any caller as producer and the writer as
//   its consumer; Inbound has the connection thread (and the writer, for a failed send) as producers and the game
//   thread as its consumer.
#pragma once

#include "CoreMinimal.h"
#include "Containers/Queue.h"
#include "HAL/CriticalSection.h"
#include "HAL/Runnable.h"
#include "Math/RandomStream.h"
#include "Templates/UniquePtr.h"

#include <atomic>
#include <string>

#include "AvatarLinkCoreIncludes.h"

class FEvent;
class FRunnableThread;

struct FAvatarStreamClientConfig
{
	// host:port of the Serve gRPC proxy.
	FString Target;
	// The Serve application, sent as the `application` metadata of the call.
	FString Application = TEXT("conversation");
	// The caller's credential, sent as `authorization: Bearer ...`; the server takes the user from it.
	FString ApiKey;
	// Only the credential's own user id or empty: the server refuses another (PERMISSION_DENIED).
	FString UserId;
	FString Personality;
	// Session to resume from the start (empty: a new one).
	FString SessionId;
	uint32 MaxTokens = 0;
	bool bUseTls = false;
	double InitialBackoffSeconds = 0.5;
	double MaxBackoffSeconds = 30.0;
	double ConnectTimeoutSeconds = 10.0;
};

enum class EAvatarInboundKind : uint8
{
	// An attempt to open the call starts (Text: the target).
	Connecting,
	// SessionStart was written on a new call: a new avatar stream begins (its header follows).
	StreamOpened,
	// Text: session id, Detail: personality, bFlag: resumed.
	SessionStarted,
	// TurnId, Text: the user's text, Detail: topic.
	TurnStarted,
	// TurnId, Text: the token's text.
	AnswerToken,
	// Text, bFlag: final.
	Transcript,
	// The text side of a turn ended: TurnId, Code: TurnEndReason, Text: detail.
	TextTurnEnded,
	// An in-band ErrorEvent: Code (gRPC status), Text.
	ServerError,
	// A decoded avatar event in Avatar.
	Avatar,
	// An avatar event broke the stream contract: Text (it may still have been delivered as Avatar).
	ProtocolError,
	// A turn or interrupt could not be written (the call broke): Text: what was lost.
	SendFailed,
	// The call ended: Code, Text: status; Seconds: wait before the next attempt.
	Reconnecting,
	// The server refused the session for good: Code, Text. The connection thread has ended.
	Failed,
};

struct FAvatarInboundEvent
{
	EAvatarInboundKind Kind = EAvatarInboundKind::Avatar;
	FString TurnId;
	FString Text;
	FString Detail;
	int32 Code = 0;
	bool bFlag = false;
	double Seconds = 0.0;
	avatarlink::AvatarStreamEvent Avatar;
};

class FAvatarStreamClient final : public FRunnable
{
public:
	explicit FAvatarStreamClient(const FAvatarStreamClientConfig& InConfig);
	virtual ~FAvatarStreamClient() override;

	// Game thread: creates the channel and starts both threads. False when a thread could not be created.
	bool Start();
	// Game thread: cancels the call, wakes and joins both threads. Safe to call more than once.
	void Shutdown();

	// Any thread. Empty text is the caller's to reject (the server would answer INVALID_ARGUMENT).
	void SendText(const FString& Text);
	void Interrupt(const FString& Reason);

	// Game thread (the single consumer): the next decoded event, if any.
	bool PollEvent(FAvatarInboundEvent& OutEvent);

	//~ Begin FRunnable (the connection thread)
	virtual bool Init() override;
	virtual uint32 Run() override;
	virtual void Stop() override;
	virtual void Exit() override;
	//~ End FRunnable

private:
	struct FGrpcState;
	class FWriter;

	struct FOutbound
	{
		enum class EKind : uint8
		{
			Text,
			Interrupt,
		};
		EKind Kind = EKind::Text;
		std::string Payload;  // UTF-8
		double EnqueuedSeconds = 0.0;
	};

	// How one call ended.
	struct FCallResult
	{
		bool bSessionStarted = false;
		int32 Code = 0;  // grpc::StatusCode
		FString Message;
	};

	FCallResult RunOneCall();
	bool WaitForChannel();
	void HandleServerEvent(const almquist::v1::ServerEvent& Event, FCallResult& Result);  // connection thread
	void FlushOutbound();  // writer thread
	void Post(FAvatarInboundEvent&& Event);
	double BackoffSeconds(int32 Attempt);

	FAvatarStreamClientConfig Config;
	TUniquePtr<FGrpcState> Grpc;
	TUniquePtr<FWriter> Writer;
	FRunnableThread* ConnectionThread = nullptr;
	FRunnableThread* WriterThread = nullptr;
	// Wakes the connection thread out of a backoff sleep (Stop).
	FEvent* WakeEvent = nullptr;
	// Wakes the writer thread (an item was enqueued, a call went live, Stop).
	FEvent* WriterEvent = nullptr;

	std::atomic<bool> bStopping{false};
	// A call is open and SessionStart was written: the writer may write.
	std::atomic<bool> bCallLive{false};
	// FPlatformTime::Seconds() when the current call went live: older interrupts are stale.
	std::atomic<double> CallLiveSinceSeconds{0.0};

	TQueue<FAvatarInboundEvent, EQueueMode::Mpsc> Inbound;
	TQueue<FOutbound, EQueueMode::Mpsc> Outbound;

	// Connection thread only.
	avatarlink::StreamDecoder Decoder;
	FRandomStream Jitter;
	FString SessionId;
};
