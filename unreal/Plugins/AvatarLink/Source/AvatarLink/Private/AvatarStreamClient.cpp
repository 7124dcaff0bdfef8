#include "AvatarStreamClient.h"

#include "AvatarLinkLog.h"
#include "Grpc/AvatarLinkGrpc.h"
#include "HAL/Event.h"
#include "HAL/PlatformProcess.h"
#include "HAL/PlatformTime.h"
#include "HAL/RunnableThread.h"
#include "Misc/ScopeLock.h"

#include <chrono>
#include <memory>

namespace
{
using FConverseStream = grpc::ClientReaderWriter<almquist::v1::ClientEvent, almquist::v1::ServerEvent>;

FString ToFString(const std::string& Utf8)
{
	return FString(UTF8_TO_TCHAR(Utf8.c_str()));
}

std::string ToUtf8(const FString& Text)
{
	return std::string(TCHAR_TO_UTF8(*Text));
}

int ToMilliseconds(double Seconds)
{
	return static_cast<int>(FMath::Clamp(Seconds * 1000.0, 1.0, 3600.0 * 1000.0));
}

// Statuses after which a new attempt cannot succeed: the request itself is wrong or not allowed.
bool IsFinalStatus(grpc::StatusCode Code)
{
	switch (Code)
	{
	case grpc::StatusCode::INVALID_ARGUMENT:  // e.g. an unknown personality
	case grpc::StatusCode::UNAUTHENTICATED:
	case grpc::StatusCode::PERMISSION_DENIED:
	case grpc::StatusCode::UNIMPLEMENTED:  // not an Almquist server, or the wrong Serve application
		return true;
	default:
		return false;
	}
}
}  // namespace

struct FAvatarStreamClient::FGrpcState
{
	std::shared_ptr<grpc::Channel> Channel;
	std::unique_ptr<almquist::v1::Conversation::Stub> Stub;
	// Guards swapping Context/Stream, so that Stop() on the game thread can cancel the current call.
	FCriticalSection CallLock;
	std::unique_ptr<grpc::ClientContext> Context;
	std::unique_ptr<FConverseStream> Stream;
	// Held around every Write. The connection thread takes it after the call is over or cancelled (which makes a
	// pending Write return) and before Finish, so a call is never torn down under a Write.
	FCriticalSection WriteLock;
};

class FAvatarStreamClient::FWriter final : public FRunnable
{
public:
	explicit FWriter(FAvatarStreamClient& InOwner)
		: Owner(InOwner)
	{
	}

	virtual uint32 Run() override
	{
		while (!Owner.bStopping)
		{
			// Woken by SendText/Interrupt, by a call going live and by Stop; the timeout is only a safety net.
			Owner.WriterEvent->Wait(250);
			Owner.FlushOutbound();
		}
		return 0;
	}

	virtual void Stop() override
	{
		Owner.WriterEvent->Trigger();
	}

private:
	FAvatarStreamClient& Owner;
};

FAvatarStreamClient::FAvatarStreamClient(const FAvatarStreamClientConfig& InConfig)
	: Config(InConfig)
	, Grpc(MakeUnique<FGrpcState>())
	, Jitter(static_cast<int32>(FPlatformTime::Cycles()))
	, SessionId(InConfig.SessionId)
{
}

FAvatarStreamClient::~FAvatarStreamClient()
{
	Shutdown();
}

bool FAvatarStreamClient::Start()
{
	check(IsInGameThread());
	check(ConnectionThread == nullptr);

	// The channel reconnects its transport by itself; keep its backoff within ours (its default grows to 120 s).
	grpc::ChannelArguments Arguments;
	Arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, ToMilliseconds(Config.InitialBackoffSeconds));
	Arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, ToMilliseconds(Config.InitialBackoffSeconds));
	Arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, ToMilliseconds(Config.MaxBackoffSeconds));
	const std::shared_ptr<grpc::ChannelCredentials> Credentials =
		Config.bUseTls ? grpc::SslCredentials(grpc::SslCredentialsOptions()) : grpc::InsecureChannelCredentials();
	Grpc->Channel = grpc::CreateCustomChannel(ToUtf8(Config.Target), Credentials, Arguments);
	Grpc->Stub = almquist::v1::Conversation::NewStub(Grpc->Channel);

	WakeEvent = FPlatformProcess::GetSynchEventFromPool(false);
	WriterEvent = FPlatformProcess::GetSynchEventFromPool(false);
	Writer = MakeUnique<FWriter>(*this);
	ConnectionThread = FRunnableThread::Create(this, TEXT("AvatarLinkConnection"), 0, TPri_Normal);
	WriterThread = FRunnableThread::Create(Writer.Get(), TEXT("AvatarLinkWriter"), 0, TPri_Normal);
	if (ConnectionThread == nullptr || WriterThread == nullptr)
	{
		UE_LOG(LogAvatarLink, Error, TEXT("Could not start the AvatarLink stream threads."));
		Shutdown();
		return false;
	}
	return true;
}

void FAvatarStreamClient::Shutdown()
{
	Stop();
	// Kill(true) calls the runnable's Stop() again and waits for Run() to return: a cancelled Read returns at
	// once, and a backoff sleep or a channel wait is woken or polls bStopping every 250 ms.
	if (ConnectionThread != nullptr)
	{
		ConnectionThread->Kill(true);
		delete ConnectionThread;
		ConnectionThread = nullptr;
	}
	if (WriterThread != nullptr)
	{
		WriterThread->Kill(true);
		delete WriterThread;
		WriterThread = nullptr;
	}
	Writer.Reset();
	if (WakeEvent != nullptr)
	{
		FPlatformProcess::ReturnSynchEventToPool(WakeEvent);
		WakeEvent = nullptr;
	}
	if (WriterEvent != nullptr)
	{
		FPlatformProcess::ReturnSynchEventToPool(WriterEvent);
		WriterEvent = nullptr;
	}
}

void FAvatarStreamClient::SendText(const FString& Text)
{
	FOutbound Item;
	Item.Kind = FOutbound::EKind::Text;
	Item.Payload = ToUtf8(Text);
	Item.EnqueuedSeconds = FPlatformTime::Seconds();
	Outbound.Enqueue(MoveTemp(Item));
	if (WriterEvent != nullptr)
	{
		WriterEvent->Trigger();
	}
}

void FAvatarStreamClient::Interrupt(const FString& Reason)
{
	FOutbound Item;
	Item.Kind = FOutbound::EKind::Interrupt;
	Item.Payload = ToUtf8(Reason);
	Item.EnqueuedSeconds = FPlatformTime::Seconds();
	Outbound.Enqueue(MoveTemp(Item));
	if (WriterEvent != nullptr)
	{
		WriterEvent->Trigger();
	}
}

bool FAvatarStreamClient::PollEvent(FAvatarInboundEvent& OutEvent)
{
	return Inbound.Dequeue(OutEvent);
}

void FAvatarStreamClient::Post(FAvatarInboundEvent&& Event)
{
	Inbound.Enqueue(MoveTemp(Event));
}

bool FAvatarStreamClient::Init()
{
	return Grpc.IsValid() && Grpc->Stub != nullptr;
}

void FAvatarStreamClient::Stop()
{
	bStopping = true;
	if (Grpc.IsValid())
	{
		FScopeLock Lock(&Grpc->CallLock);
		if (Grpc->Context)
		{
			// Read and Write return false at once; a call not started yet starts cancelled.
			Grpc->Context->TryCancel();
		}
	}
	if (WakeEvent != nullptr)
	{
		WakeEvent->Trigger();
	}
	if (WriterEvent != nullptr)
	{
		WriterEvent->Trigger();
	}
}

void FAvatarStreamClient::Exit()
{
	UE_LOG(LogAvatarLink, Verbose, TEXT("AvatarLink connection thread ended."));
}

double FAvatarStreamClient::BackoffSeconds(int32 Attempt)
{
	// Exponential, capped, with "equal jitter": half fixed, half random, so that many clients that lost the
	// server together do not come back in lockstep.
	const double Exponential = Config.InitialBackoffSeconds * static_cast<double>(1LL << FMath::Clamp(Attempt, 0, 20));
	const double Capped = FMath::Min(Config.MaxBackoffSeconds, Exponential);
	return Capped * (0.5 + 0.5 * static_cast<double>(Jitter.GetFraction()));
}

uint32 FAvatarStreamClient::Run()
{
	int32 Attempt = 0;
	while (!bStopping)
	{
		const FCallResult Result = RunOneCall();
		if (bStopping)
		{
			break;
		}
		const grpc::StatusCode Code = static_cast<grpc::StatusCode>(Result.Code);
		if (IsFinalStatus(Code))
		{
			UE_LOG(LogAvatarLink, Error, TEXT("The server refused the session (%d): %s"), Result.Code, *Result.Message);
			FAvatarInboundEvent Failed;
			Failed.Kind = EAvatarInboundKind::Failed;
			Failed.Code = Result.Code;
			Failed.Text = Result.Message;
			Post(MoveTemp(Failed));
			return 1;
		}
		double DelaySeconds = 0.0;
		if (Code == grpc::StatusCode::NOT_FOUND && !SessionId.IsEmpty())
		{
			// The session to resume is gone (expired, or the server lost its state): start a new one now.
			UE_LOG(LogAvatarLink, Warning, TEXT("Session %s is unknown to the server; starting a new session."), *SessionId);
			SessionId.Reset();
			Attempt = 0;
		}
		else
		{
			if (Result.bSessionStarted)
			{
				Attempt = 0;  // the call worked for a while: start the backoff over
			}
			DelaySeconds = BackoffSeconds(Attempt);
			Attempt = FMath::Min(Attempt + 1, 20);
		}
		UE_LOG(LogAvatarLink, Warning, TEXT("Converse ended (%d: %s); next attempt in %.2f s."), Result.Code, *Result.Message, DelaySeconds);
		FAvatarInboundEvent Reconnecting;
		Reconnecting.Kind = EAvatarInboundKind::Reconnecting;
		Reconnecting.Code = Result.Code;
		Reconnecting.Text = Result.Message;
		Reconnecting.Seconds = DelaySeconds;
		Post(MoveTemp(Reconnecting));
		if (DelaySeconds > 0.0)
		{
			WakeEvent->Wait(static_cast<uint32>(ToMilliseconds(DelaySeconds)));
		}
	}
	return 0;
}

bool FAvatarStreamClient::WaitForChannel()
{
	const double Deadline = FPlatformTime::Seconds() + Config.ConnectTimeoutSeconds;
	while (!bStopping)
	{
		const grpc_connectivity_state State = Grpc->Channel->GetState(/*try_to_connect*/ true);
		if (State == GRPC_CHANNEL_READY)
		{
			return true;
		}
		if (FPlatformTime::Seconds() >= Deadline)
		{
			return false;
		}
		// Short slices so that Stop() is noticed quickly.
		Grpc->Channel->WaitForStateChange(State, std::chrono::system_clock::now() + std::chrono::milliseconds(250));
	}
	return false;
}

FAvatarStreamClient::FCallResult FAvatarStreamClient::RunOneCall()
{
	FCallResult Result;
	{
		FAvatarInboundEvent Connecting;
		Connecting.Kind = EAvatarInboundKind::Connecting;
		Connecting.Text = Config.Target;
		Post(MoveTemp(Connecting));
	}
	if (!WaitForChannel())
	{
		Result.Code = static_cast<int32>(grpc::StatusCode::UNAVAILABLE);
		Result.Message = FString::Printf(TEXT("%s did not accept a connection within %.0f s"), *Config.Target, Config.ConnectTimeoutSeconds);
		return Result;
	}

	Decoder.Reset();  // a new call is a new avatar stream: its header comes first, its clock starts at 0
	{
		FScopeLock Lock(&Grpc->CallLock);
		if (bStopping)
		{
			return Result;
		}
		Grpc->Context = std::make_unique<grpc::ClientContext>();
		// Ray Serve's gRPC proxy routes on this metadata (the Python client sends the same).
		Grpc->Context->AddMetadata("application", ToUtf8(Config.Application));
		if (!Config.ApiKey.IsEmpty())  // every call has an owner: without it the server answers UNAUTHENTICATED
		{
			Grpc->Context->AddMetadata("authorization", "Bearer " + ToUtf8(Config.ApiKey));
		}
	}
	// Starting the call sends its metadata; Stop() can already cancel it through the context.
	std::unique_ptr<FConverseStream> NewStream = Grpc->Stub->Converse(Grpc->Context.get());
	{
		FScopeLock Lock(&Grpc->CallLock);
		Grpc->Stream = std::move(NewStream);
	}

	almquist::v1::ClientEvent StartEvent;
	almquist::v1::SessionStart* SessionStart = StartEvent.mutable_start();
	SessionStart->set_session_id(ToUtf8(SessionId));
	SessionStart->set_user_id(ToUtf8(Config.UserId));
	SessionStart->set_personality(ToUtf8(Config.Personality));
	SessionStart->set_avatar(true);
	SessionStart->set_max_tokens(Config.MaxTokens);
	bool bLive = false;
	{
		FScopeLock Lock(&Grpc->WriteLock);
		bLive = !bStopping && Grpc->Stream->Write(StartEvent);
	}

	if (bLive)
	{
		CallLiveSinceSeconds = FPlatformTime::Seconds();
		bCallLive = true;
		FAvatarInboundEvent Opened;
		Opened.Kind = EAvatarInboundKind::StreamOpened;
		Post(MoveTemp(Opened));
		WriterEvent->Trigger();  // turns queued while disconnected go out now

		almquist::v1::ServerEvent Event;
		while (!bStopping && Grpc->Stream->Read(&Event))
		{
			HandleServerEvent(Event, Result);
			Event.Clear();
		}
	}

	bCallLive = false;
	if (bStopping || !bLive)
	{
		// Finish would otherwise wait for the server to end the call.
		FScopeLock Lock(&Grpc->CallLock);
		Grpc->Context->TryCancel();
	}
	{
		// The call is over or cancelled, so a Write in flight returns; wait for it before finishing the call.
		FScopeLock Lock(&Grpc->WriteLock);
	}
	const grpc::Status Status = Grpc->Stream->Finish();
	{
		FScopeLock Lock(&Grpc->CallLock);
		Grpc->Stream.reset();  // before its context
		Grpc->Context.reset();
	}
	Result.Code = static_cast<int32>(Status.error_code());
	Result.Message = ToFString(Status.error_message());
	return Result;
}

void FAvatarStreamClient::HandleServerEvent(const almquist::v1::ServerEvent& Event, FCallResult& Result)
{
	FAvatarInboundEvent Out;
	Out.TurnId = ToFString(Event.turn_id());
	switch (Event.event_case())
	{
	case almquist::v1::ServerEvent::kSessionStarted:
	{
		const almquist::v1::SessionStarted& Started = Event.session_started();
		SessionId = ToFString(Started.session_id());
		Result.bSessionStarted = true;
		Out.Kind = EAvatarInboundKind::SessionStarted;
		Out.Text = SessionId;
		Out.Detail = ToFString(Started.personality());
		Out.bFlag = Started.resumed();
		break;
	}
	case almquist::v1::ServerEvent::kTurnStarted:
		Out.Kind = EAvatarInboundKind::TurnStarted;
		Out.Text = ToFString(Event.turn_started().user_text());
		Out.Detail = ToFString(Event.turn_started().topic());
		break;
	case almquist::v1::ServerEvent::kToken:
		Out.Kind = EAvatarInboundKind::AnswerToken;
		Out.Text = ToFString(Event.token().text());
		break;
	case almquist::v1::ServerEvent::kTranscript:
		Out.Kind = EAvatarInboundKind::Transcript;
		Out.Text = ToFString(Event.transcript().text());
		Out.bFlag = Event.transcript().is_final();
		break;
	case almquist::v1::ServerEvent::kTurnEnd:
		Out.Kind = EAvatarInboundKind::TextTurnEnded;
		Out.Code = static_cast<int32>(Event.turn_end().reason());
		Out.Text = ToFString(Event.turn_end().detail());
		break;
	case almquist::v1::ServerEvent::kError:
		Out.Kind = EAvatarInboundKind::ServerError;
		Out.Code = Event.error().code();
		Out.Text = ToFString(Event.error().message());
		break;
	case almquist::v1::ServerEvent::kAvatar:
	{
		const avatarlink::DecodeStatus Status = Decoder.Decode(Event, Out.Avatar);
		if (!Status.Ok())
		{
			FAvatarInboundEvent Problem;
			Problem.Kind = EAvatarInboundKind::ProtocolError;
			Problem.TurnId = Out.TurnId;
			Problem.Text = ToFString(Status.error);
			Post(MoveTemp(Problem));
		}
		if (!Status.has_event)
		{
			return;
		}
		Out.Kind = EAvatarInboundKind::Avatar;
		break;
	}
	default:
		return;  // citations and media are not the avatar's
	}
	Post(MoveTemp(Out));
}

void FAvatarStreamClient::FlushOutbound()
{
	FOutbound Item;
	while (bCallLive && Outbound.Dequeue(Item))
	{
		if (Item.Kind == FOutbound::EKind::Interrupt && Item.EnqueuedSeconds < CallLiveSinceSeconds.load())
		{
			// Meant for an answer of a call that is gone.
			continue;
		}
		almquist::v1::ClientEvent Message;
		if (Item.Kind == FOutbound::EKind::Text)
		{
			Message.mutable_text()->set_text(Item.Payload);
		}
		else
		{
			Message.mutable_interrupt()->set_reason(Item.Payload);
		}
		bool bWritten = false;
		{
			FScopeLock Lock(&Grpc->WriteLock);
			// bCallLive is checked under the lock: the connection thread clears it before taking the lock to
			// finish the call, so Stream is valid here whenever it is set.
			bWritten = bCallLive && Grpc->Stream && Grpc->Stream->Write(Message);
		}
		if (!bWritten)
		{
			// At most once: the call broke around this write, and whether the server got it is unknown.
			FAvatarInboundEvent Lost;
			Lost.Kind = EAvatarInboundKind::SendFailed;
			Lost.Text = ToFString(Item.Payload);
			Lost.Code = Item.Kind == FOutbound::EKind::Text ? 0 : 1;
			Post(MoveTemp(Lost));
		}
	}
}
